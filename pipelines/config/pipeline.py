"""PipelineConfig: everything one run of the chain needs, validated before any compute.

Named configs ship as YAML in `pipelines/run_configs/` (`local`, `smoke`, `paper`); any YAML file
works too. Overrides use dotted paths with YAML values: `download.processes=4`,
`pretrain.max_steps=10`, `ray.address=auto`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from pipelines.config.base import StageConfig
from pipelines.config.download import DownloadConfig
from pipelines.config.eval import EvalConfig
from pipelines.config.features import FeaturesConfig
from pipelines.config.register import RegisterConfig
from pipelines.config.train import TrainConfig
from pipelines.core.ray_cluster import RayConfig
from vlora.config import ModelConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "run_configs"


class TrackingConfig(StageConfig):
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking/registry URI (http://…, databricks, sqlite:///…); None = a "
        "local SQLite store `mlflow.db` in a local workdir.",
    )
    experiment: str = Field(default="vlora", description="MLflow experiment name.")
    artifact_location: str | None = Field(
        default=None,
        description="Artifact root of the experiment when this pipeline creates it (a folder or "
        "any URL MLflow accepts: s3://…); None = the tracking server's default, or "
        "`<workdir>/mlartifacts` with the local SQLite default.",
    )


class PipelineConfig(StageConfig):
    name: str = Field(description="Run name (used in logs, MLflow and artifacts).")
    preset: str = Field(description="Model preset (vlora presets): architecture and defaults.")
    model: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the preset's model config, by dotted path, e.g. "
        "{'vision.image_size': 112, 'generator.rank': 16}; validated like the preset itself.",
    )
    design: Literal["vlora", "input_space"] = Field(
        default="vlora",
        description="Train and evaluate VLoRA or the LLaVA-style input-space baseline on the same "
        "data (download and features are shared between the two).",
    )
    workdir: str = Field(
        description="Root of every stage output: a local folder or any fsspec URL (s3://…)."
    )
    seed: int = Field(
        default=0,
        description="Seed of the run's training: the generator's (or projector's) initialisation "
        "and the data order of pre-training and SFT, unless `pretrain.seed` / `sft.seed` are set. "
        "Which images and conversations are used is `download.seed`'s, so runs with different "
        "seeds share the download and features stages.",
    )
    hub_downloads: bool | None = Field(
        default=None,
        description="Model weights from the Hugging Face hub: true = download what is missing "
        "(the paper run; sets HF_HUB_OFFLINE=0 for the driver and every Ray worker, whatever "
        "the work pool exports), false = never (HF_HUB_OFFLINE=1), null = as the environment "
        "says (offline unless HF_HUB_OFFLINE=0 is exported).",
    )
    ray: RayConfig = Field(
        default_factory=RayConfig, description="The Ray cluster the stages run on."
    )
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="MLflow tracking and registry."
    )
    download: DownloadConfig = Field(
        default_factory=DownloadConfig, description="The download stage (img2dataset, SFT data)."
    )
    features: FeaturesConfig = Field(
        default_factory=FeaturesConfig, description="The features stage (Ray Data encoder actors)."
    )
    pretrain: TrainConfig = Field(
        default_factory=TrainConfig, description="The pretrain stage (generator or projector)."
    )
    sft: TrainConfig = Field(
        default_factory=TrainConfig, description="The sft stage (bridge and LLM)."
    )
    eval: EvalConfig = Field(
        default_factory=EvalConfig, description="The eval stage (batched generation, scoring)."
    )
    registry: RegisterConfig = Field(
        default_factory=RegisterConfig, description="The register stage (MLflow model registry)."
    )
    # The preset's ModelConfig with `model` applied, resolved once when the config is validated
    # and handed on typed to every stage; keyed on what it was resolved from, so a changed
    # `preset` or `model` (assignment, model_copy(update=…)) resolves again instead of going stale.
    _resolved_model: tuple[str, ModelConfig] | None = PrivateAttr(default=None)

    @field_validator("workdir")
    @classmethod
    def _absolute_local_workdir(cls, workdir: str) -> str:
        # Ray Train and pyarrow need absolute local paths; a relative workdir means "under the
        # directory the pipeline was started from", fixed here once so every stage agrees.
        if "://" in workdir:
            return workdir
        return str(Path(workdir).expanduser().resolve())

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str) -> str:
        from vlora.presets import PRESETS

        if name not in PRESETS:
            raise ValueError(f"unknown preset '{name}'; valid: {', '.join(PRESETS.names())}")
        return name

    def mlflow_uri(self) -> str:
        """The tracking URI: configured, or a SQLite file in a local workdir."""
        if self.tracking.mlflow_tracking_uri:
            return self.tracking.mlflow_tracking_uri
        from pipelines.core import fs

        if not fs.is_local(self.workdir):
            raise ValueError(
                "tracking.mlflow_tracking_uri: required when workdir is remote "
                f"('{self.workdir}'); point it at your MLflow server"
            )
        root = Path(fs.filesystem(self.workdir)[1]).resolve()
        root.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{root / 'mlflow.db'}"

    def mlflow_artifact_location(self) -> str | None:
        """Artifact root for experiments we create (never MLflow's cwd-relative `./mlruns`)."""
        if self.tracking.artifact_location or self.tracking.mlflow_tracking_uri:
            return self.tracking.artifact_location
        self.mlflow_uri()  # creates the local root, or fails for a remote workdir
        root = Path(fs_path(self.workdir)).resolve()
        return (root / "mlartifacts").as_uri()

    def registered_model_name(self) -> str:
        if self.registry.model_name:
            return self.registry.model_name
        prefix = "vlora" if self.design == "vlora" else "input-space"
        return f"{prefix}-{self.name}"

    @model_validator(mode="after")
    def _thresholds_name_benchmarks(self) -> PipelineConfig:
        evaluated = {entry.key for entry in self.eval.benchmarks}
        missing = sorted(
            name for name in self.registry.thresholds if name.split("/")[0] not in evaluated
        )
        if missing:
            raise ValueError(
                f"registry.thresholds: {missing} name benchmarks that eval.benchmarks does not "
                f"run ({', '.join(sorted(evaluated))})"
            )
        return self

    @model_validator(mode="after")
    def _stage_seeds_from_run_seed(self) -> PipelineConfig:
        # resolved once, here, so every consumer (stage keys, plans, datasets) sees an int
        for section in (self.pretrain, self.sft):
            if section.seed is None:
                section.seed = self.seed
        return self

    @model_validator(mode="after")
    def _resolve_model(self) -> PipelineConfig:
        self.resolved_model  # noqa: B018  fails now, naming the field, rather than mid-run
        return self

    @property
    def resolved_model(self) -> ModelConfig:
        """The model this run builds: the preset's ModelConfig with `model` overrides applied."""
        source = json.dumps([self.preset, self.model], sort_keys=True, default=str)
        if self._resolved_model is None or self._resolved_model[0] != source:
            self._resolved_model = (source, _resolve_model_config(self.preset, self.model))
        return self._resolved_model[1]


def _resolve_model_config(preset: str, overrides: dict[str, Any]) -> ModelConfig:
    from vlora.presets import get_preset

    base = get_preset(preset).model
    if not overrides:
        return base
    data = base.model_dump(mode="json")
    for dotted, value in _leaves(overrides):
        _set_dotted(data, dotted, value)
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as err:
        raise ValueError(describe_errors(err, prefix="model.")) from None


def fs_path(url: str) -> str:
    from pipelines.core import fs

    return fs.filesystem(url)[1]


def named_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _leaves(overrides: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested override sections as dotted leaves: `--set model.generator.rank=32` arrives as
    {"generator": {"rank": 32}} and must change the rank only, not replace the preset's whole
    generator section with defaults."""
    leaves = []
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            leaves.extend(_leaves(value, f"{dotted}."))
        else:
            leaves.append((dotted, value))
    return leaves


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        if node.get(part) is None:  # an unset optional section (e.g. an architecture dict)
            node[part] = {}
        child = node[part]
        if not isinstance(child, dict):
            raise ValueError(f"override '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override '{item}' must look like section.field=value")
        _set_dotted(data, key.strip(), yaml.safe_load(raw))
    return data


def load_pipeline_config(
    source: str | Path | dict[str, Any], overrides: list[str] | None = None
) -> PipelineConfig:
    """A named config ('local', 'smoke', …), a YAML path, or a dict; then dotted overrides.

    Validation errors name the field (pydantic's location), before any stage runs.
    """
    if isinstance(source, dict):
        data = dict(source)
    else:
        path = Path(source)
        if not path.suffix and (CONFIG_DIR / f"{source}.yaml").is_file():
            path = CONFIG_DIR / f"{source}.yaml"
        if not path.is_file():
            raise FileNotFoundError(
                f"config '{source}' is neither a YAML file nor a named config "
                f"({', '.join(named_configs())})"
            )
        data = yaml.safe_load(path.read_text()) or {}
    data = apply_overrides(data, overrides or [])
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ValueError(f"invalid pipeline config: {describe_errors(err)}") from None


def describe_errors(err: ValidationError, prefix: str = "") -> str:
    """'field.path: message; …' — the field first, without pydantic's 'Value error, ' noise."""
    parts = []
    for error in err.errors():
        location = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{prefix}{location}: {message}" if location else f"{prefix}{message}")
    return "; ".join(parts)
