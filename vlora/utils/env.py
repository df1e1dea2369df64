"""Offline, telemetry-free defaults (README, "Offline and telemetry"): applied by every entry point.

`setdefault` semantics: a user who exports e.g. HF_HUB_OFFLINE=0 to download weights keeps that.
"""

from __future__ import annotations

import os
import sys

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


HUB_ACCESS_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def set_hub_access(allow_downloads: bool | None) -> bool:
    """Allow (True) or forbid (False) downloads from the Hugging Face hub in this process and
    in the processes it starts; None leaves the environment as it is.

    A run config says this explicitly (the paper run must fetch Vicuna and CLIP even where a
    work pool exports HF_HUB_OFFLINE=1). huggingface_hub reads the variable once, at import, so
    an already imported module is updated too. Returns whether downloads are now allowed.
    """
    if allow_downloads is not None:
        value = "0" if allow_downloads else "1"
        for key in HUB_ACCESS_VARIABLES:
            os.environ[key] = value
        constants = sys.modules.get("huggingface_hub.constants")
        if constants is not None:
            constants.HF_HUB_OFFLINE = not allow_downloads
    # huggingface_hub is offline when either variable is true; unset counts as our default (1)
    return not any(
        os.environ.get(key, "1").strip().upper() in {"1", "ON", "YES", "TRUE"}
        for key in HUB_ACCESS_VARIABLES
    )
