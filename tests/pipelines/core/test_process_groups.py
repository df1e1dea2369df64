"""Servers started as process groups stop by themselves: on `stop()`, and through the watchdog
when their owner dies without stopping them or their lifetime ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil

from pipelines.core.process_groups import ManagedProcess, Watchdog

# a server that forks a child, as `ray start` forks its raylet: both in the group
FORKING = [
    sys.executable,
    "-c",
    "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)",
]


def _gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
        if not alive:
            return True
        time.sleep(0.2)
    return False


def _members_when_forked(process: ManagedProcess) -> list[psutil.Process]:
    deadline = time.monotonic() + 10
    while len(process.members()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    return process.members()


def test_stop_and_kill_reach_the_whole_group(tmp_path) -> None:
    env = dict(os.environ)
    server = ManagedProcess("server", FORKING, tmp_path / "server.log", env)
    members = _members_when_forked(server)
    assert len(members) == 2 and server.alive()
    assert server.stop(timeout=5) == []
    assert _gone([m.pid for m in members], 10)

    node = ManagedProcess("node", FORKING, tmp_path / "node.log", env)
    members = _members_when_forked(node)
    node.kill()  # a lost machine: SIGKILL, everything at once
    assert _gone([m.pid for m in members], 10) and not node.alive()


def test_the_watchdog_stops_the_groups_of_an_owner_that_died(tmp_path) -> None:
    owner_code = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from pipelines.core.process_groups import ManagedProcess, Watchdog
        dog = Watchdog(lifetime_s=600)
        server = ManagedProcess("server", {FORKING!r}, Path({str(tmp_path)!r}) / "s.log", dict(os.environ))
        dog.register(server)
        while len(server.members()) < 2:
            time.sleep(0.1)
        print(" ".join(str(m.pid) for m in server.members()), flush=True)
        time.sleep(600)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", owner_code], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in owner.stdout.readline().split()]
    assert len(pids) == 2 and all(psutil.pid_exists(p) for p in pids)
    owner.send_signal(signal.SIGKILL)  # dies without stopping anything
    owner.wait()
    assert _gone(pids, 30), "the watchdog left the dead owner's server running"


def test_the_watchdog_ends_a_group_whose_lifetime_is_over(tmp_path) -> None:
    dog = Watchdog(lifetime_s=1.0)
    server = ManagedProcess("server", FORKING, tmp_path / "s.log", dict(os.environ))
    dog.register(server)
    members = _members_when_forked(server)
    assert _gone([m.pid for m in members], 30)
    dog.release()


def test_a_released_watchdog_leaves_running_groups_alone(tmp_path) -> None:
    dog = Watchdog(lifetime_s=600)
    server = ManagedProcess("server", FORKING, tmp_path / "s.log", dict(os.environ))
    dog.register(server)
    dog.release()  # the owner stops its groups itself from here on
    assert dog.popen.poll() is not None  # the watchdog has exited
    time.sleep(1)
    assert server.alive()
    assert server.stop(timeout=5) == []
