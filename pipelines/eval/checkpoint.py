"""The checkpoint under evaluation: validation before any work, and its identity for the key.

A checkpoint is a ``save_pretrained`` folder (local path or fsspec URL) holding
``vlora_config.json``. Hashing a 7B model's weights on every run would take minutes, so the
identity is the config file's content plus every file's relative path, size and modification
time: re-saving a model (even with the same shapes) gives a new stage key; copying it elsewhere
gives a new key too (a harmless recomputation).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pipelines.core import fs
from vlora.checkpoint import CONFIG_FILE


def checkpoint_manifest(url: str, field: str) -> dict[str, Any]:
    """``vlora_config.json`` of the checkpoint at ``url``; a clear error naming ``field``."""
    config_url = fs.join(url, CONFIG_FILE)
    try:
        found = fs.exists(config_url)
    except (OSError, ValueError, ImportError) as err:
        raise ValueError(f"{field}: cannot reach checkpoint '{url}' ({err})") from None
    if not found:
        raise ValueError(f"{field}: '{url}' is not a VLoRA checkpoint (no {CONFIG_FILE})")
    manifest = fs.read_json(config_url)
    if not isinstance(manifest, dict) or "model" not in manifest or "kind" not in manifest:
        raise ValueError(f"{field}: {config_url} is not a valid checkpoint config")
    return manifest


def checkpoint_identity(url: str) -> dict[str, Any]:
    """Digest of the config content and of every file's (path, size, mtime) under ``url``."""
    filesystem, root = fs.filesystem(url)
    digest = hashlib.sha256()
    digest.update(json.dumps(fs.read_json(fs.join(url, CONFIG_FILE)), sort_keys=True).encode())
    files = filesystem.find(root, detail=True)
    for path in sorted(files):
        info = files[path]
        relative = path[len(root.rstrip("/")) :].lstrip("/")
        stamp = info.get("mtime") or info.get("LastModified") or info.get("ETag") or ""
        digest.update(f"{relative}\0{info.get('size')}\0{stamp}\n".encode())
    return {"checkpoint": url, "digest": digest.hexdigest()[:16]}
