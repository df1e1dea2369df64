"""SIGTERM unwinds an entry point: shutdown hooks (Ray, Prefect's temporary API) run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = """
import atexit, sys, time
from pathlib import Path
from pipelines.core.signals import unwind_on_sigterm

marker = Path(sys.argv[1])
unwind_on_sigterm()
atexit.register(lambda: marker.write_text("atexit ran"))
try:
    print("ready", flush=True)
    time.sleep(60)
finally:
    marker.with_suffix(".finally").write_text("finally ran")
"""


def test_sigterm_runs_finally_blocks_and_atexit_hooks(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(marker)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 128 + signal.SIGTERM
        assert time.monotonic() - started < 30
    finally:
        if process.poll() is None:
            process.kill()
    assert marker.read_text() == "atexit ran"
    assert marker.with_suffix(".finally").read_text() == "finally ran"
