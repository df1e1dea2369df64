"""The stages in order, by name → their `run(config, force=False) -> StageResult`."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from pipelines.config import PipelineConfig
from pipelines.core.stage import StageResult
from vlora.registry import UnknownNameError

STAGE_ORDER = ("download", "features", "pretrain", "sft", "eval", "register")

StageRunner = Callable[..., StageResult]


def get_stage(name: str) -> StageRunner:
    if name not in STAGE_ORDER:
        raise UnknownNameError(f"unknown stage '{name}'; valid: {', '.join(STAGE_ORDER)}")
    module = importlib.import_module(f"pipelines.{name}")
    return module.run


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
