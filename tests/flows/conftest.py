"""One smoke chain for the end-to-end flow tests.

The chain under `prefect_test_harness` runs once per session; the deployment test then runs
`vlora/full-pipeline` over the same workdir, where the finished stages are cached no-ops and the
forced ones (eval, register) really execute inside the process worker's flow run. Sharing it
saves CI one whole training chain (about four minutes on 2 cores) and adds a check: a run made
by the deployment finds the harness run's stages by their keys.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def harness(tmp_path_factory):
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="session")
def smoke_run(harness, tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    """(workdir, results) of one fresh smoke chain, run under the test harness."""
    from flows.vlora_flow import vlora

    workdir = tmp_path_factory.mktemp("smoke") / "run"
    return workdir, vlora(config="smoke", overrides=[f"workdir={workdir}"])
