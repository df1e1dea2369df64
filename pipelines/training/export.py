"""Exporting the inference checkpoint (safetensors + JSON) to local or remote storage."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from pipelines.core import fs
from vlora.utils.atomic import atomic_directory

logger = logging.getLogger(__name__)


def export_model(model, export_dir: str) -> str:
    """`model.save_pretrained` into `export_dir`: atomic locally; remote object stores get the
    files uploaded after a complete local save."""
    if fs.is_local(export_dir):
        final = model.save_pretrained(fs.filesystem(export_dir)[1])  # atomic by itself
        logger.info("exported the inference checkpoint to %s", final)
        return str(final)
    filesystem, path = fs.filesystem(export_dir)
    with tempfile.TemporaryDirectory(prefix="vlora-export-") as tmp:
        local = model.save_pretrained(Path(tmp) / "model")
        filesystem.put(str(local), path, recursive=True)
    logger.info("exported the inference checkpoint to %s", export_dir)
    return export_dir


def local_copy(url: str) -> str:
    """A local folder holding `url` (itself when local; a cached download otherwise)."""
    if fs.is_local(url):
        return fs.filesystem(url)[1]
    import hashlib

    from vlora.offline.cache import vlora_cache_dir

    target = vlora_cache_dir() / "remote" / hashlib.sha256(url.encode()).hexdigest()[:16]
    if not (target / "vlora_config.json").is_file():
        filesystem, path = fs.filesystem(url)
        root = path.rstrip("/")
        # file by file to its relative path: fsspec's recursive `get` into an existing folder
        # nests the source folder inside it (tmp/model/…), and the copy had no config on top
        files = filesystem.find(root)
        if not files:
            raise FileNotFoundError(f"no files under '{url}'")
        if target.exists():  # a copy without its config on top: incomplete or mis-laid, redo
            shutil.rmtree(target)
        with atomic_directory(target) as tmp:
            for remote in files:
                local = tmp / remote[len(root) :].lstrip("/")
                local.parent.mkdir(parents=True, exist_ok=True)
                filesystem.get_file(remote, str(local))
    return str(target)
