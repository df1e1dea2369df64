"""fsspec for all stage I/O: local folders, s3://, gs://, memory://, … behave the same.

Atomicity: on a local filesystem files are written to a temporary name and renamed; object
stores have atomic single-object puts, so writing the whole object at once is enough. A stage's
`_MANIFEST.json` is written last either way, and nothing without one is read downstream.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path within it) for a local path or any fsspec URL.

    An object store is opened without fsspec's listings cache: other processes (Ray tasks on
    other nodes, the img2dataset child) write the files this process checks, and a listing
    cached before they wrote made `exists` deny a file that was there (a finished download
    shard was taken for a missing one and downloaded again, then failed the stage).
    """
    protocol = fsspec.core.split_protocol(url)[0]
    if protocol in OBJECT_STORE_PROTOCOLS:
        return fsspec.core.url_to_fs(url, use_listings_cache=False)
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def join(base: str, *parts: str) -> str:
    """Join path parts, keeping a URL scheme intact ('s3://b/x' + 'y' → 's3://b/x/y')."""
    if "://" in base:
        scheme, rest = base.split("://", 1)
        return f"{scheme}://{posixpath.join(rest, *parts)}"
    return os.path.join(base, *parts)


def is_local(url: str) -> bool:
    return isinstance(filesystem(url)[0], LocalFileSystem)


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


# Object stores have buckets, not folders: a key prefix needs no creating, and fsspec's
# makedirs would create a missing bucket, so a mistyped bucket name became a new bucket.
OBJECT_STORE_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})


def is_object_store(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & OBJECT_STORE_PROTOCOLS)


def makedirs(url: str) -> None:
    """Create a folder; on an object store only check that the bucket exists."""
    fs, path = filesystem(url)
    if is_object_store(fs):
        bucket = path.split("/", 1)[0]
        if not fs.exists(bucket):
            raise FileNotFoundError(
                f"bucket '{bucket}' of '{url}' does not exist (create it first)"
            )
        return
    fs.makedirs(path, exist_ok=True)


def write_bytes_atomic(url: str, data: bytes) -> None:
    fs, path = filesystem(url)
    parent = (
        posixpath.dirname(path) if not isinstance(fs, LocalFileSystem) else os.path.dirname(path)
    )
    if parent and not is_object_store(fs):
        fs.makedirs(parent, exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    else:
        with fs.open(path, "wb") as handle:
            handle.write(data)


def write_json_atomic(url: str, obj: Any) -> None:
    write_bytes_atomic(
        url, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()
    )


def read_json(url: str) -> Any:
    fs, path = filesystem(url)
    with fs.open(path, "rb") as handle:
        return json.loads(handle.read())


def check_writable(url: str, field: str) -> None:
    """Fail early, naming the config field, if `url` cannot be created or written."""
    probe = join(url, f".write-probe-{uuid.uuid4().hex[:8]}")
    try:
        makedirs(url)
        write_bytes_atomic(probe, b"ok")
        fs, path = filesystem(probe)
        fs.rm(path)
    except (OSError, PermissionError, ValueError) as err:
        raise ValueError(f"{field}: '{url}' is not writable ({err})") from None
