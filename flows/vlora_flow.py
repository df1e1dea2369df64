"""The `vlora` flow (the whole chain or a subset) and one flow per stage.

    prefect deployment run vlora/full-pipeline
    prefect deployment run vlora/features -p overrides='["features.batch_size=64"]'

Parameters are validated (the pipeline config, stage names) before any stage runs; a bad value
fails naming the field. Stages run in order; a finished stage is a no-op, a forced one reruns
and, through the content-addressed keys, so does everything downstream of it.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.artifacts import artifact_key, resume_note
from flows.tasks import stage_task
from pipelines.config import PipelineConfig, load_pipeline_config
from pipelines.stages import STAGE_ORDER
from vlora.factories import UnknownNameError
from vlora.utils.env import apply_offline_defaults


def resolve_parameters(
    config: str | dict[str, Any], overrides: list[str], stages: list[str] | None, force: list[str]
) -> tuple[PipelineConfig, list[str], list[str]]:
    """Validate everything a run needs; raises naming the field or stage."""
    pipeline_config = load_pipeline_config(config, overrides)
    selected = list(STAGE_ORDER) if not stages else list(stages)
    unknown = sorted((set(selected) | set(force)) - set(STAGE_ORDER))
    if unknown:
        raise UnknownNameError(
            f"stages/force: unknown stage(s) {unknown}; valid: {', '.join(STAGE_ORDER)}"
        )
    return pipeline_config, [s for s in STAGE_ORDER if s in selected], list(force)


def chain_markdown(config: PipelineConfig, results: dict[str, dict]) -> str:
    lines = [
        f"# vlora run `{config.name}` ({config.preset}, {config.design})",
        "",
        "| stage | cached | seconds | output | notes |",
        "|---|---|---|---|---|",
    ]
    for name, result in results.items():
        lines.append(
            f"| {name} | {'yes' if result['cached'] else 'no'} | {result['seconds']:.1f} | "
            f"`{result['output_dir']}` | {resume_note(result)} |"
        )
    metrics = results.get("eval", {}).get("metrics", {})
    if metrics:
        lines += ["", "| eval metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in sorted(metrics.items())]
    return "\n".join(lines) + "\n"


@flow(name="vlora", log_prints=True, validate_parameters=True)
def vlora(
    config: str | dict[str, Any] = "local",
    overrides: list[str] | None = None,
    stages: list[str] | None = None,
    force: list[str] | None = None,
    serve: dict[str, Any] | None = None,
) -> dict[str, dict]:
    """Run the VLoRA pipeline: download → features → pretrain → sft → eval → register.

    Args:
        config: a named config (local, smoke, paper), a YAML path, or a config mapping.
        overrides: dotted overrides, e.g. ["pretrain.max_steps=10", "ray.address=auto"].
        stages: the stages to run (default: all, in order).
        force: stages to redo from scratch (everything downstream reruns as well).
        serve: after the stages, (re)deploy the registry's production version to a Ray Serve
            application (`pipelines.serve.redeploy.ServeTarget` fields; the `serve`
            deployment sets it). None (the default, and the local chain): no deployment.
    """
    apply_offline_defaults()
    logger = get_run_logger()
    pipeline_config, selected, forced = resolve_parameters(
        config, overrides or [], stages, force or []
    )
    logger.info("run %s: stages %s (forced: %s)", pipeline_config.name, selected, forced or "none")
    payload = pipeline_config.model_dump(mode="json")
    results: dict[str, dict] = {}
    for name in selected:
        results[name] = stage_task(name)(payload, force=name in forced)
    create_markdown_artifact(
        markdown=chain_markdown(pipeline_config, results),
        key=artifact_key("chain", pipeline_config.name),
        description="the whole run: stages, outputs, eval metrics",
    )
    if serve is not None:
        from flows.serve_flow import serve_task

        results["serve"] = serve_task(payload, serve)
    return results


def _single_stage_flow(stage: str):
    @flow(name=f"vlora-{stage}", log_prints=True, validate_parameters=True)
    def run_one(
        config: str | dict[str, Any] = "local",
        overrides: list[str] | None = None,
        force: bool = False,
    ) -> dict:
        apply_offline_defaults()
        pipeline_config, _, _ = resolve_parameters(config, overrides or [], [stage], [])
        return stage_task(stage)(pipeline_config.model_dump(mode="json"), force=force)

    run_one.__doc__ = f"Run only the `{stage}` stage (its upstream must have finished)."
    return run_one


download_flow = _single_stage_flow("download")
features_flow = _single_stage_flow("features")
pretrain_flow = _single_stage_flow("pretrain")
sft_flow = _single_stage_flow("sft")
eval_flow = _single_stage_flow("eval")
register_flow = _single_stage_flow("register")
