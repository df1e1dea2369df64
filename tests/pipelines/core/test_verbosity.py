"""What a run prints: the driver decides once, and every process it starts follows."""

from __future__ import annotations

import logging
import os
import sys

import pytest

from pipelines.core import verbosity
from pipelines.core.ray_cluster import worker_env

DECIDED = (
    verbosity.VERBOSE_ENV,
    verbosity.PROGRESS_BARS_ENV,
    verbosity.RAY_DATA_LOG_LEVEL_ENV,
    verbosity.HF_PROGRESS_BARS_ENV,
    verbosity.TQDM_DISABLE_ENV,
    "PREFECT_LOGGING_LEVEL",
    *verbosity.PREFECT_RUN_LOGGERS_ENV,
)


@pytest.fixture
def clean_env(monkeypatch):
    # setenv first so that teardown restores each variable, also those set_verbosity adds
    for name in DECIDED:
        monkeypatch.setenv(name, "unset")
        monkeypatch.delenv(name)
    return monkeypatch


def test_default_run_raises_framework_chatter_and_keeps_run_lines(clean_env) -> None:
    verbosity.set_verbosity(False, progress_bars=False)
    env = os.environ
    assert env[verbosity.RAY_DATA_LOG_LEVEL_ENV] == "WARNING"
    assert env["PREFECT_LOGGING_LEVEL"] == "WARNING"
    # the flow- and task-run loggers carry the stage summaries: they stay at INFO
    assert all(env[name] == "INFO" for name in verbosity.PREFECT_RUN_LOGGERS_ENV)
    assert env[verbosity.HF_PROGRESS_BARS_ENV] == "1"
    assert env[verbosity.TQDM_DISABLE_ENV] == "1"  # bars libraries draw unconditionally
    assert not verbosity.is_verbose()
    assert not verbosity.progress_bars_enabled()
    assert verbosity.framework_log_level() == "WARNING"


def test_verbose_keeps_everything_and_exported_values_win(clean_env) -> None:
    clean_env.setenv("PREFECT_LOGGING_LEVEL", "DEBUG")
    verbosity.set_verbosity(True, progress_bars=True)
    env = os.environ
    assert verbosity.is_verbose() and verbosity.progress_bars_enabled()
    assert verbosity.framework_log_level() == "INFO"
    assert verbosity.RAY_DATA_LOG_LEVEL_ENV not in env  # Ray Data's own default
    assert verbosity.HF_PROGRESS_BARS_ENV not in env
    assert verbosity.TQDM_DISABLE_ENV not in env
    assert env["PREFECT_LOGGING_LEVEL"] == "DEBUG"


def test_progress_bars_follow_the_terminal_when_nothing_was_decided(clean_env) -> None:
    assert verbosity.progress_bars_enabled() == sys.stderr.isatty()


def test_ray_workers_get_the_drivers_decision(clean_env) -> None:
    verbosity.set_verbosity(False, progress_bars=False)
    env = worker_env()
    assert env[verbosity.VERBOSE_ENV] == "0"
    assert env[verbosity.PROGRESS_BARS_ENV] == "0"
    assert env[verbosity.RAY_DATA_LOG_LEVEL_ENV] == "WARNING"
    assert env[verbosity.HF_PROGRESS_BARS_ENV] == "1"
    assert env[verbosity.TQDM_DISABLE_ENV] == "1"


def test_console_logging_prints_stage_lines_once(clean_env, capsys) -> None:
    # the conftest restores the loggers afterwards
    logging.getLogger("pipelines").handlers.clear()
    verbosity.set_verbosity(False, progress_bars=False)
    verbosity.configure_console_logging()
    verbosity.configure_console_logging()  # the CLI and a test may both call it
    logging.getLogger("pipelines.core.stage").info("[features] started: /x")
    logging.getLogger("pipelines.core.stage").debug("[features] summary: {}")
    err = capsys.readouterr().err
    assert err.count("[features] started: /x") == 1
    assert "summary" not in err


def test_ray_data_draws_no_bars_into_a_file(clean_env) -> None:
    from ray.data import DataContext

    context = DataContext.get_current()
    saved = (context.enable_progress_bars, context.enable_operator_progress_bars)
    level = logging.getLogger("ray.data").level
    try:
        verbosity.set_verbosity(False, progress_bars=False)
        verbosity.quiet_ray_data()
        assert not context.enable_progress_bars and not context.enable_operator_progress_bars
        assert logging.getLogger("ray.data").level == logging.WARNING
    finally:
        context.enable_progress_bars, context.enable_operator_progress_bars = saved
        logging.getLogger("ray.data").setLevel(level)


def test_ray_train_report_lines_are_dropped_unless_verbose(clean_env) -> None:
    from ray.train.v2._internal.execution import context

    level = context.logger.level
    try:
        verbosity.set_verbosity(True, progress_bars=False)
        verbosity.quiet_ray_train_reports()
        assert context.logger.level == level
        verbosity.set_verbosity(False, progress_bars=False)
        verbosity.quiet_ray_train_reports()
        assert not context.logger.isEnabledFor(logging.INFO)
    finally:
        context.logger.setLevel(level)
