"""Prefect tasks wrapping `pipelines.<stage>.run`: no ML logic here.

No Prefect result caching: stage outputs are content-addressed and a finished stage returns its
manifest at once, so Prefect caching would only add a way to return stale results (DESIGN.md).
Retries re-enter the same stage directory, where the stage resumes from what it finished.
"""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.artifacts import artifact_key, stage_markdown
from pipelines.config import PipelineConfig
from pipelines.stages import get_stage

# Stages that talk to remote sources or long-running clusters get retries; retries resume.
STAGE_RETRIES = {"download": 2, "features": 1, "pretrain": 1, "sft": 1, "eval": 1, "register": 2}


def stage_task(name: str):
    @task(
        name=name,
        retries=STAGE_RETRIES.get(name, 0),
        retry_delay_seconds=10,
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
