"""Finding a stage's finished upstream results from the pipeline config alone.

Each stage module declares `STAGE`, `UPSTREAM` (names of the stages it reads) and
`key_config(config) -> dict` (the part of the config its output depends on). A stage's key is a
hash of that and its upstream fingerprints, so the directory of any finished stage can be found
by walking the chain from the first stage: `finished_result(config, "features")`.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from pipelines.core import fs
from pipelines.core.stage import StageResult, load_result, stage_key

if TYPE_CHECKING:
    from pipelines.config import PipelineConfig


def stage_module(name: str) -> ModuleType:
    return importlib.import_module(f"pipelines.{name}")


def upstream_results(config: PipelineConfig, name: str) -> dict[str, StageResult]:
    """The finished results of the stages `name` reads (clear error if one is missing)."""
    return {up: finished_result(config, up) for up in stage_module(name).UPSTREAM}


def stage_dir(config: PipelineConfig, name: str) -> str:
    upstream = upstream_results(config, name)
    module = stage_module(name)
    key = stage_key(
        name,
        module.key_config(config),
        {n: r.fingerprint for n, r in sorted(upstream.items())},
    )
    return fs.join(config.workdir, name, key)


def finished_result(config: PipelineConfig, name: str) -> StageResult:
    try:
        return load_result(stage_dir(config, name))
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"stage '{name}' has no finished result for this config: {err}"
        ) from None
