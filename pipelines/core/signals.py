"""SIGTERM unwinds the entry points like Ctrl-C does.

Python's default SIGTERM ends the process on the spot: no `finally`, no atexit. The private Ray
cluster and Prefect's temporary API (a uvicorn child process) would outlive the run. Raising
SystemExit instead runs their shutdown hooks; finished stages are kept and a rerun resumes
from them.
"""

from __future__ import annotations

import signal
import threading


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def unwind_on_sigterm() -> None:
    """Install the handler (main thread only, as Python requires; elsewhere a no-op)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit)
