"""Finding a stage's finished upstream results from the pipeline config alone.

Each stage module declares `STAGE`, `UPSTREAM` (names of the stages it reads; or a function
`upstream_stages(config)` when that depends on the config) and
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


# Each stage's module (its `run`, `key_config`, `UPSTREAM`): a stage owns the package of its
# name, with its helpers beside it, except the two training stages, which share
# `pipelines/training/`.
STAGE_MODULES = {
    "download": "pipelines.download.stage",
    "features": "pipelines.features.stage",
    "pretrain": "pipelines.training.pretrain",
    "sft": "pipelines.training.sft",
    "eval": "pipelines.eval.stage",
    "register": "pipelines.register.stage",
}


def stage_module(name: str) -> ModuleType:
    return importlib.import_module(STAGE_MODULES[name])


def upstream_names(config: PipelineConfig, name: str) -> tuple[str, ...]:
    """The stages `name` reads: `upstream_stages(config)` where a stage's inputs depend on its
    config (eval with an explicit checkpoint reads no sft), else its constant `UPSTREAM`."""
    module = stage_module(name)
    if hasattr(module, "upstream_stages"):
        return tuple(module.upstream_stages(config))
    return tuple(module.UPSTREAM)


def upstream_results(config: PipelineConfig, name: str) -> dict[str, StageResult]:
    """The finished results of the stages `name` reads (clear error if one is missing)."""
    return {up: finished_result(config, up) for up in upstream_names(config, name)}


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
