"""Config of the register stage (MLflow model registry). Owner: orchestration."""

from __future__ import annotations

from pydantic import Field

from pipelines.config.base import StageConfig


class RegisterConfig(StageConfig):
    model_name: str = Field(default="vlora", description="Registered model name.")
