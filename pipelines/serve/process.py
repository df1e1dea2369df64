"""`python -m pipelines serve …` as a child process: started, waited for, stopped, checked.

    with ServerProcess(["--model", "tiny-llama"]) as server:
        client = OpenAI(base_url=server.base_url + "/v1", api_key="-")
        ...
    # stopped with SIGTERM; raises if anything it started is still running or listening

Used by the load benchmark, the served-vs-offline scorer and the tests: each talks to the real
command over loopback, exactly as a user would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from pipelines.core.process_groups import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
QUIET_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "WANDB_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
}


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


class ServerProcess:
    def __init__(
        self,
        args: list[str],
        port: int | None = None,
        startup_timeout_s: float = 300.0,
        env: dict[str, str] | None = None,
        api_key: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.args = [*args, "--host", "127.0.0.1", "--port", str(self.port)]
        self.startup_timeout_s = startup_timeout_s
        self.env = {**os.environ, **QUIET_ENV, **(env or {})}
        self.api_key = api_key
        self.process: subprocess.Popen | None = None
        handle, name = tempfile.mkstemp(prefix="vlora-serve-", suffix=".log")
        os.close(handle)
        self.log_path = Path(name)
        self.descendants: list[int] = []
        self.started_in_s = float("nan")
        self.stopped_in_s = float("nan")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def start(self) -> ServerProcess:
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipelines", "serve", *self.args],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a stray signal to ours misses it
            )
        deadline = started + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/health", timeout=5).status_code == 200:
                    self.started_in_s = time.monotonic() - started
                    return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"the server was not healthy after {self.startup_timeout_s} s")

    def _descendants(self) -> list[int]:
        import psutil

        assert self.process is not None
        with contextlib.suppress(psutil.NoSuchProcess):
            return [p.pid for p in psutil.Process(self.process.pid).children(recursive=True)]
        return []

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 120.0) -> int:
        """Signal the server and wait; returns its exit status. Kills it (and says so) if it
        does not stop in time."""
        assert self.process is not None
        if self.process.poll() is not None:
            return self.process.returncode
        self.descendants = self._descendants()
        started = time.monotonic()
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise TimeoutError(f"the server ignored signal {sig} for {timeout_s} s") from None
        self.stopped_in_s = time.monotonic() - started
        return code

    def leftovers(self, grace_s: float = 15.0) -> list[str]:
        """Processes the server started that are still alive, and whether its port listens."""
        import psutil

        deadline = time.monotonic() + grace_s
        while True:
            alive = []
            for pid in self.descendants:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process = psutil.Process(pid)
                    if process.status() != psutil.STATUS_ZOMBIE:
                        alive.append(f"{pid} {' '.join(process.cmdline())[:80]}")
            if listening(self.port):
                alive.append(f"port {self.port} still listening")
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.5)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
        # nothing it started may outlive it
        for line in self.leftovers():
            if line.split()[0].isdigit():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(line.split()[0]), signal.SIGKILL)
