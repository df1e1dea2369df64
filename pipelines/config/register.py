"""Config of the register stage (MLflow Model Registry). Owner: orchestration.

Field descriptions are the help text; see the README section "Model registry".
"""

from __future__ import annotations

from pydantic import Field, field_validator

from pipelines.config.base import StageConfig


class RegisterConfig(StageConfig):
    model_name: str | None = Field(
        default=None,
        description="Registered model name; None = 'vlora-<run name>' (or "
        "'input-space-<run name>' for the baseline design), so the two designs never share a "
        "version history.",
    )
    candidate_alias: str = Field(
        default="candidate", description="Alias every newly registered version receives."
    )
    production_alias: str = Field(
        default="production",
        description="Alias moved to the new version only when every threshold passes.",
    )
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Eval metric → minimum value for promotion to production, e.g. "
        "{'EasyVQA_TEST/Overall': 60}. Metric names are the eval stage's "
        "'<BENCHMARK>/<metric>' (percent scale); each benchmark must be in eval.benchmarks. "
        "Empty = never promote automatically.",
    )
    description: str = Field(default="", description="Free text stored on the model version.")

    @field_validator("thresholds")
    @classmethod
    def _metric_names(cls, thresholds: dict[str, float]) -> dict[str, float]:
        bad = [name for name in thresholds if "/" not in name]
        if bad:
            raise ValueError(
                f"threshold names must look like '<BENCHMARK>/<metric>' "
                f"(e.g. 'EasyVQA_TEST/Overall'); got {bad}"
            )
        return thresholds

    @field_validator("candidate_alias", "production_alias")
    @classmethod
    def _alias(cls, alias: str) -> str:
        # MLflow reserves 'latest' and version-like names ('v3') for itself.
        if alias.lower() == "latest" or (alias[:1] in "vV" and alias[1:].isdigit()) or not alias:
            raise ValueError(f"'{alias}' is reserved by MLflow; choose another alias")
        return alias
