"""How much a run prints.

By default a run's log holds what a person reads: one line as each stage starts and ends, the
stage summaries, the periodic training lines and the final report. Ray's and Prefect's own INFO
chatter (Ray Data's execution plans and progress, Ray Train's per-report and worker-group lines,
Prefect's server lines) is raised to WARNING; `--verbose` (or VLORA_VERBOSE=1) keeps it.
Progress bars are drawn only when the driver writes to a terminal: redrawn into a file they
become hundreds of lines.

The choice is made once, in the driver, and travels in environment variables: Ray workers get
them from `ray_cluster.worker_env` and child processes (img2dataset) inherit them, so every
process of the run follows it. Warnings and errors always print.
"""

from __future__ import annotations

import logging
import os
import sys

VERBOSE_ENV = "VLORA_VERBOSE"
PROGRESS_BARS_ENV = "VLORA_PROGRESS_BARS"
# Ray Data reads this in every process that imports it; it sets the level of Ray Data's loggers.
RAY_DATA_LOG_LEVEL_ENV = "RAY_DATA_LOG_LEVEL"
# Prefect's flow-run and task-run loggers carry the pipeline's own stage lines and summaries:
# they stay at INFO while Prefect's other loggers follow PREFECT_LOGGING_LEVEL.
PREFECT_RUN_LOGGERS_ENV = (
    "PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL",
    "PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL",
)
# huggingface_hub's switch, which transformers follows too ("Loading weights" bars in workers),
# and tqdm's own default for bars that libraries draw unconditionally (the one-time GGUF
# conversion of SmolLM2, safetensors shard writing)
HF_PROGRESS_BARS_ENV = "HF_HUB_DISABLE_PROGRESS_BARS"
TQDM_DISABLE_ENV = "TQDM_DISABLE"
FORWARDED_VARIABLES = (
    VERBOSE_ENV,
    PROGRESS_BARS_ENV,
    RAY_DATA_LOG_LEVEL_ENV,
    HF_PROGRESS_BARS_ENV,
    TQDM_DISABLE_ENV,
)
CONSOLE_FORMAT = "%(asctime)s | %(levelname)-7s | %(message)s"


def set_verbosity(verbose: bool, progress_bars: bool | None = None) -> None:
    """Decide for this process and those it starts; call before Ray or Prefect is imported.

    `progress_bars` None = only when stderr is a terminal. Variables a user exported win.
    """
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    if progress_bars is None:
        progress_bars = sys.stderr.isatty()
    os.environ[PROGRESS_BARS_ENV] = "1" if progress_bars else "0"
    if not progress_bars:
        os.environ.setdefault(HF_PROGRESS_BARS_ENV, "1")
        os.environ.setdefault(TQDM_DISABLE_ENV, "1")
    if not verbose:  # verbose leaves Ray Data at its own default (DEBUG to its log files)
        os.environ.setdefault(RAY_DATA_LOG_LEVEL_ENV, "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", framework_log_level())
    for name in PREFECT_RUN_LOGGERS_ENV:
        os.environ.setdefault(name, "INFO")


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def progress_bars_enabled() -> bool:
    """Whether to draw progress bars: the driver's decision, or a terminal where none was made."""
    decided = os.environ.get(PROGRESS_BARS_ENV)
    if decided is not None:
        return decided == "1"
    return sys.stderr.isatty()


def framework_log_level() -> str:
    """The level of Ray's and Prefect's own loggers for this run."""
    return "INFO" if is_verbose() else "WARNING"


def configure_console_logging() -> None:
    """One console handler for the pipeline's own loggers (`pipelines.*`, `flows.*`), at INFO.

    Outside Prefect nothing else prints them: Ray leaves the root logger at WARNING.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(CONSOLE_FORMAT, datefmt="%H:%M:%S"))
    for name in ("pipelines", "flows"):
        logger = logging.getLogger(name)
        if not any(getattr(h, "_vlora_console", False) for h in logger.handlers):
            handler._vlora_console = True  # type: ignore[attr-defined]  # added once per process
            logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if is_verbose() else logging.INFO)
        logger.propagate = False


def quiet_ray_data() -> None:
    """Ray Data in this process: progress bars only on a terminal, its loggers at the run's level.

    The DataContext travels with each dataset, so the streaming-split coordinator that feeds the
    training workers (another process) draws no bars either.
    """
    from ray.data import DataContext

    context = DataContext.get_current()
    show = progress_bars_enabled()
    context.enable_progress_bars = show
    context.enable_operator_progress_bars = show
    if not is_verbose():
        logging.getLogger("ray.data").setLevel(os.environ.get(RAY_DATA_LOG_LEVEL_ENV, "WARNING"))


def quiet_ray_train_reports() -> None:
    """In a training worker: drop Ray Train's line per report unless verbose.

    Ray Train logs each `ray.train.report` ("Reporting training result N: TrainingReport(…)",
    a few hundred characters) on a logger named after its source file, outside `ray.train`, so
    RunConfig's LoggingConfig does not reach it. Our own step lines say the same in a line.
    """
    if is_verbose():
        return
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray version: its lines stay, nothing breaks
        return
    report_logger = getattr(context, "logger", None)
    if isinstance(report_logger, logging.Logger):
        report_logger.setLevel(logging.WARNING)
