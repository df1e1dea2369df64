"""`prefect server start` on 127.0.0.1, a process worker, `prefect deploy` from prefect.yaml and
`prefect deployment run vlora/full-pipeline` with the smoke config; everything started is
stopped afterwards (by process group of what this test started, never by name).

The deployment runs over the session's smoke workdir (tests/flows/conftest.py) with
`force=["eval"]` while the SFT export is moved away: eval fails at once (a missing input is not
retried) and so does the flow run. With the export back, `prefect flow-run retry` resumes that same flow run: download
to sft are found finished by their keys, eval (Ray Data actors on a local Ray cluster inside the
worker's flow-run process) and register execute."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not become healthy in {timeout} s")


def describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} {' '.join(process.cmdline())[:160]}"
    except psutil.Error:
        return f"{process.pid} (gone)"


def stop_group(process: subprocess.Popen, descendants: list[psutil.Process]) -> list[str]:
    """SIGTERM the process group we created; returns what is still alive afterwards."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    _, alive = psutil.wait_procs(descendants, timeout=120)
    return [describe(p) for p in alive]


TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def stage_manifests(workdir: Path) -> dict[str, float]:
    return {
        str(p.relative_to(workdir)): p.stat().st_mtime for p in workdir.glob("*/*/_MANIFEST.json")
    }


def test_full_pipeline_deployment_on_a_local_server(smoke_run, tmp_path) -> None:
    import ray

    if ray.is_initialized():  # the harness chain's cluster: the flow run starts its own
        ray.shutdown()
    workdir, results = smoke_run
    before = stage_manifests(workdir)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "VLORA_REPO_DIR": str(REPO),
    }
    started: list[tuple[subprocess.Popen, list[psutil.Process]]] = []

    def launch(*args: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [PREFECT, *args],
            env=env,
            cwd=REPO,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append((process, []))
        return process

    def prefect(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PREFECT, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
        )

    def flow_run_state(flow_run_id: str) -> str:
        inspected = prefect("flow-run", "inspect", flow_run_id, "--output", "json")
        assert inspected.returncode == 0, inspected.stdout + inspected.stderr
        return json.loads(inspected.stdout)["state"]["type"]

    try:
        launch("server", "start", "--host", "127.0.0.1", "--port", str(port))
        wait_healthy(f"{api}/health", timeout=180)
        listening = {
            c.laddr.ip
            for p in [
                psutil.Process(started[0][0].pid),
                *psutil.Process(started[0][0].pid).children(recursive=True),
            ]
            for c in p.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN
        }
        assert listening == {"127.0.0.1"}, listening
        created = prefect("work-pool", "create", "vlora-process", "--type", "process")
        assert created.returncode == 0, created.stdout + created.stderr
        deployed = prefect("--no-prompt", "deploy", "--all", timeout=300)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        launch("worker", "start", "--pool", "vlora-process")
        sft_export = Path(results["sft"]["artifacts"]["model"])
        moved = sft_export.rename(sft_export.with_name("model.moved-away"))
        try:
            run = prefect(
                "deployment",
                "run",
                "vlora/full-pipeline",
                "-p",
                'config="smoke"',
                "-p",
                f'overrides=["workdir={workdir}"]',
                "-p",
                'force=["eval"]',
                "--watch",
                "--watch-timeout",
                "900",
                timeout=1000,
            )
        finally:
            moved.rename(sft_export)
        assert run.returncode != 0, run.stdout[-4000:]
        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", run.stdout).group(1)
        assert flow_run_state(flow_run_id) == "FAILED"
        logs = prefect("flow-run", "logs", flow_run_id).stdout
        assert "sft artifacts['model']" in logs, logs[-3000:]  # the cause, named

        retried = prefect("flow-run", "retry", flow_run_id)
        assert retried.returncode == 0, retried.stdout + retried.stderr
        deadline = time.monotonic() + 1500
        state = flow_run_state(flow_run_id)
        while state not in TERMINAL and time.monotonic() < deadline:
            time.sleep(5)
            state = flow_run_state(flow_run_id)
        assert state == "COMPLETED", prefect("flow-run", "logs", flow_run_id).stdout[-4000:]
        after = stage_manifests(workdir)
        redone = {path.split("/")[0] for path, mtime in after.items() if before.get(path) != mtime}
        assert redone == {"eval", "register"}, redone  # the forced stage and what follows
        for path, mtime in before.items():
            if path.split("/")[0] not in redone:
                assert after[path] == mtime, path  # found finished, not touched
        # the flow-run process (and the Ray cluster it started) ends by itself once completed
        worker = psutil.Process(started[-1][0].pid)
        deadline = time.monotonic() + 180
        while worker.children() and time.monotonic() < deadline:
            time.sleep(2)
        assert not worker.children(recursive=True), [
            describe(p) for p in worker.children(recursive=True)
        ]
    finally:
        left = []
        for process, _ in reversed(started):
            descendants = (
                psutil.Process(process.pid).children(recursive=True)
                if process.poll() is None
                else []
            )
            left += stop_group(process, descendants)
        assert not left, f"processes left running: {left}"
