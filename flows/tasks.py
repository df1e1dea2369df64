"""Prefect tasks wrapping `pipelines.<stage>.run`: no ML logic here.

No Prefect result caching: stage outputs are content-addressed and a finished stage returns its
manifest at once, so Prefect caching would only add a way to return stale results.
Retries re-enter the same stage directory, where the stage resumes from what it finished.
"""

from __future__ import annotations

from typing import Any

from prefect import State, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.artifacts import artifact_key, stage_markdown
from pipelines.config import PipelineConfig
from pipelines.stages import get_stage

# Stages that talk to remote sources or long-running clusters get retries; retries resume.
STAGE_RETRIES = {"download": 2, "features": 1, "pretrain": 1, "sft": 1, "eval": 1, "register": 2}

# A bad config value or a missing input fails the same way on every attempt: not retried. (A
# Ray task's error is also an instance of its cause's class, so this holds inside actors too.)
NOT_RETRIED = (ValueError, KeyError, TypeError, FileNotFoundError)


def worth_retrying(task: Any, task_run: Any, state: State) -> bool:
    """Prefect's retry_condition_fn: retry transient failures (network, a lost Ray worker, a
    failed download batch), not deterministic ones."""
    try:
        error = state.result(raise_on_failure=False)
    except Exception:  # the failure cannot be read back: retrying is the safe side
        return True
    return not isinstance(error, NOT_RETRIED)


def stage_task(name: str):
    @task(
        name=name,
        retries=STAGE_RETRIES.get(name, 0),
        retry_delay_seconds=10,
        retry_condition_fn=worth_retrying,
        cache_policy=NO_CACHE,
        log_prints=True,
    )
    def run_stage_task(config: dict, force: bool = False) -> dict:
        pipeline_config = PipelineConfig.model_validate(config)
        result = get_stage(name)(pipeline_config, force=force)
        create_markdown_artifact(
            markdown=stage_markdown(result),
            key=artifact_key(name, pipeline_config.name),
            description=f"{name}: summary, metrics and outputs",
        )
        return result.model_dump(mode="json")

    return run_stage_task
