"""Stage tasks retry transient failures only (no Prefect server needed)."""

from __future__ import annotations

import pytest
from prefect.states import Failed
from ray.exceptions import RayTaskError

from flows.tasks import STAGE_RETRIES, stage_task, worth_retrying
from pipelines.download.report import DownloadFailedError
from pipelines.stages import STAGE_ORDER


@pytest.mark.parametrize(
    "error",
    [
        ValueError("pretrain.lr: must be > 0"),
        FileNotFoundError("download.pretrain.url_list: no *.parquet files"),
        KeyError("stage"),
        RayTaskError("actor", "traceback", ValueError("eval.checkpoint")).as_instanceof_cause(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_deterministic_failures_are_not_retried(error: BaseException) -> None:
    assert worth_retrying(None, None, Failed(data=error)) is False


@pytest.mark.parametrize(
    "error",
    [
        DownloadFailedError("40% of the batch failed"),
        ConnectionResetError("peer reset"),
        TimeoutError("tracking server"),
        RayTaskError("actor", "traceback", RuntimeError("worker died")).as_instanceof_cause(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient_failures_are_retried(error: BaseException) -> None:
    assert worth_retrying(None, None, Failed(data=error)) is True


def test_every_stage_task_has_the_retry_rule() -> None:
    assert set(STAGE_RETRIES) == set(STAGE_ORDER)
    for name in STAGE_ORDER:
        task = stage_task(name)
        assert task.retries == STAGE_RETRIES[name]
        assert task.retry_condition_fn is worth_retrying
