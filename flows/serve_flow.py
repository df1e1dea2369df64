"""The task behind the Prefect deployment `vlora/serve`: the production version onto Serve.

`prefect deployment run vlora/serve` runs the `vlora` flow with `stages: [register]` (a cached
no-op once the pipeline registered its model) and `serve: {...}` (a
`pipelines.serve.redeploy.ServeTarget`): then the version the registry's `production` alias
points at is (re)deployed to the cluster's Serve application. The local chain passes no
`serve`, so it never deploys.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.artifacts import artifact_key
from flows.tasks import worth_retrying
from pipelines.config import PipelineConfig


def serve_markdown(result: dict[str, Any]) -> str:
    rows = "\n".join(f"| {key} | `{value}` |" for key, value in result.items())
    return f"# serve: {result['model']}\n\n| | |\n|---|---|\n{rows}\n"


@task(
    name="serve",
    retries=2,
    retry_delay_seconds=30,
    retry_condition_fn=worth_retrying,
    cache_policy=NO_CACHE,
    log_prints=True,
)
def serve_task(config: dict, target: dict) -> dict[str, Any]:
    from pipelines.serve.redeploy import ServeTarget, redeploy

    pipeline_config = PipelineConfig.model_validate(config)
    result = redeploy(
        ServeTarget.model_validate(target),
        pipeline_config.registered_model_name(),
        pipeline_config.mlflow_uri(),
    )
    create_markdown_artifact(
        markdown=serve_markdown(result),
        key=artifact_key("serve", pipeline_config.name),
        description="the registered version deployed to Ray Serve",
    )
    return result
