"""Test-wide settings: offline, no telemetry, deterministic, small thread pools."""

from __future__ import annotations

import os

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "WANDB_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _pipeline_loggers_as_they_were():
    """The CLIs' console logging (`verbosity.configure_console_logging`) stops the pipeline's
    loggers from propagating; a test that runs a CLI in-process must not take caplog's records
    away from the tests after it."""
    import logging

    loggers = [logging.getLogger(name) for name in ("pipelines", "flows")]
    saved = [(lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    yield
    for logger, (handlers, propagate, level) in zip(loggers, saved, strict=True):
        logger.handlers[:] = handlers
        logger.propagate, logger.level = propagate, level


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
