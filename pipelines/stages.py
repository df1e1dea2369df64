"""The stages in order, by name → their `run(config, force=False) -> StageResult`."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from pipelines.config import PipelineConfig
from pipelines.core.chain import stage_module
from pipelines.core.stage import StageResult
from vlora.factories import UnknownNameError
from vlora.utils.env import set_hub_access

logger = logging.getLogger(__name__)

STAGE_ORDER = ("download", "features", "pretrain", "sft", "eval", "register")

StageRunner = Callable[..., StageResult]


def get_stage(name: str) -> StageRunner:
    if name not in STAGE_ORDER:
        raise UnknownNameError(f"unknown stage '{name}'; valid: {', '.join(STAGE_ORDER)}")
    module = stage_module(name)

    def run_stage(config: PipelineConfig, force: bool = False) -> StageResult:
        apply_run_environment(config)
        return module.run(config, force=force)

    run_stage.__doc__ = module.run.__doc__
    return run_stage


def apply_run_environment(config: PipelineConfig) -> None:
    """What the config says about the process environment, before any stage starts Ray."""
    before = set_hub_access(None)
    allowed = set_hub_access(config.hub_downloads)
    if allowed != before:
        logger.info(
            "hub downloads %s (hub_downloads=%s)", "on" if allowed else "off", config.hub_downloads
        )
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            # Ray workers took their environment from ray.init (runtime_env): they keep it.
            logger.warning(
                "hub_downloads changed after Ray started in this process: Ray workers keep "
                "HF_HUB_OFFLINE as it was; start a new process for this run"
            )


def run_chain(
    config: PipelineConfig, stages: list[str] | None = None, force: list[str] | None = None
) -> dict[str, StageResult]:
    """Run the selected stages in order (all by default). Finished stages are cached no-ops."""
    selected = [s for s in STAGE_ORDER if stages is None or s in stages]
    unknown = sorted(set(stages or []) - set(STAGE_ORDER)) + sorted(
        set(force or []) - set(STAGE_ORDER)
    )
    if unknown:
        raise UnknownNameError(f"unknown stage(s) {unknown}; valid: {', '.join(STAGE_ORDER)}")
    return {name: get_stage(name)(config, force=name in (force or [])) for name in selected}
