"""Offline, telemetry-free defaults (DESIGN.md): applied by every entry point.

`setdefault` semantics: a user who exports e.g. HF_HUB_OFFLINE=0 to download weights keeps that.
"""

from __future__ import annotations

import os

OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "WANDB_MODE": "disabled",
    "WANDB_DISABLED": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def apply_offline_defaults() -> dict[str, str]:
    """Set the defaults that are not already set; returns the resulting values."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in OFFLINE_DEFAULTS}
