"""Servers this code starts, each in its own process group, and a watchdog that stops them.

Everything a test cluster starts (Ray nodes, the S3 and MLflow servers, a Prefect server) runs as
a `ManagedProcess`: a new session, so that the process and every child it forks share one process
group; stopping or killing that group reaches them all, and nothing else (we never stop anything
by name). A `Watchdog` is a small child process that holds the groups' ids: when the process that
started them dies without stopping them (a crashed test, a SIGKILLed `up`), or when their lifetime
is over, it stops the groups itself. So a server started here stops by itself in every case.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

DONE = "done"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server this code is about to start)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ManagedProcess:
    """One command in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.name, self.argv, self.log = name, argv, log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pgid = self.popen.pid  # a session leader's pid is its group's id

    def alive(self) -> bool:
        return self.popen.poll() is None

    def members(self) -> list[psutil.Process]:
        """Every live process of the group (children that left the group are not counted)."""
        out = []
        for process in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if os.getpgid(process.pid) == self.pgid:
                    out.append(process)
        return out

    def kill(self) -> None:
        """SIGKILL the whole group at once: a lost machine, not a shutdown. Returns once every
        member is gone."""
        members = self.members()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=30)
        psutil.wait_procs(members, timeout=30)

    def stop(self, timeout: float = 30.0) -> list[str]:
        """SIGTERM the group, SIGKILL what is left after `timeout`; returns what survived."""
        return stop_all([self], timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def stop_all(processes: list[ManagedProcess], timeout: float = 30.0) -> list[str]:
    """SIGTERM every group at once, SIGKILL what is left after `timeout`; returns what
    survived (one shutdown wait for all groups, not one per group)."""
    members = {p.name: p.members() for p in processes}
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pgid, signal.SIGTERM)
    _, alive = psutil.wait_procs([m for ms in members.values() for m in ms], timeout=timeout)
    if alive:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pgid, signal.SIGKILL)
        _, alive = psutil.wait_procs(alive, timeout=10)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(timeout=5)
    owner = {m.pid: name for name, ms in members.items() for m in ms}
    return [f"{owner.get(p.pid, '?')}: {describe(p)}" for p in alive]


def describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} {' '.join(process.cmdline())[:160]}"
    except psutil.Error:
        return f"{process.pid} (gone)"


class Watchdog:
    """A child process that stops the registered groups if this process dies or time runs out."""

    def __init__(self, lifetime_s: float) -> None:
        self.popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelines.core.process_groups",
                str(os.getpid()),
                str(lifetime_s),
            ],
            stdin=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a Ctrl-C of the terminal must not take it down first
        )

    def register(self, process: ManagedProcess) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(f"{process.pgid}\n")
        self.popen.stdin.flush()

    def release(self) -> None:
        """The groups were stopped by their owner: the watchdog exits without acting."""
        with contextlib.suppress(BrokenPipeError, OSError):
            assert self.popen.stdin is not None
            self.popen.stdin.write(f"{DONE}\n")
            self.popen.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


def _stop_groups(pgids: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in pgids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        time.sleep(10 if sig == signal.SIGTERM else 0)


def _watch(parent: int, lifetime_s: float) -> None:
    """Read group ids from stdin until `done`; on EOF, parent death or timeout, stop them."""
    import selectors

    deadline = time.monotonic() + lifetime_s
    pgids: list[int] = []
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin, selectors.EVENT_READ)
    while time.monotonic() < deadline and psutil.pid_exists(parent):
        if not selector.select(timeout=1.0):
            continue
        line = sys.stdin.readline()
        if not line:
            break  # the owner is gone without saying done
        if line.strip() == DONE:
            return
        pgids.append(int(line))
    _stop_groups(pgids)


if __name__ == "__main__":
    _watch(int(sys.argv[1]), float(sys.argv[2]))
