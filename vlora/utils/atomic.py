"""Atomic publication of files and directories on the local filesystem.

A reader either sees nothing or the complete result: work happens in a temporary sibling, which
is renamed into place only once finished. Remote (fsspec) outputs are handled in `pipelines`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_directory(final_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory next to `final_dir`; rename it into place on success.

    If `final_dir` appeared meanwhile (a concurrent writer won the race), the new copy is
    discarded: both hold the same content by construction (content-addressed callers).
    """
    final = Path(final_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the published folder must be readable like any
    try:
        yield tmp
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` through a temporary file and an atomic rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a published file reads like any
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def build_once(final_dir: str | os.PathLike[str], build: Callable[[Path], None]) -> Path:
    """Return `final_dir`, building it with `build(tmp_dir)` first if it does not exist yet."""
    final = Path(final_dir)
    if final.is_dir():
        return final
    with atomic_directory(final) as tmp:
        build(tmp)
    return final
