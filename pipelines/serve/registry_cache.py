"""Registered versions, downloaded once per node and verified every time they are loaded.

`fetch_verified(name, version, uri)` keeps `<cache>/<name>/<version>/` holding `model/` and the
checksum list. A cached copy is used only when its list still has the digest recorded on the
version (`vlora.checksums_sha256`) and every file matches the list; otherwise it is fetched
again through `pipelines.register.load_registered_model`, which raises `ChecksumError` naming
the files when the registered artifacts themselves are corrupt. Replicas on one node share the
copy; a new copy appears by an atomic rename, so concurrent replicas never see half a folder.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from pipelines.register.checksums import (
    CHECKSUM_FILE,
    ChecksumError,
    checksums_json,
    digest_of,
    folder_checksums,
    verify_checksums,
)
from pipelines.register.model_registry import CHECKSUM_TAG, MODEL_ARTIFACT, load_registered_model

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    from vlora.offline.cache import vlora_cache_dir

    return vlora_cache_dir() / "registry"


def resolve_version(name: str, ref: str, tracking_uri: str) -> tuple[str, str, str | None]:
    """(version number, checksum-list digest, design tag) of `ref` (a number or an alias)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        version = (
            client.get_model_version(name, ref)
            if ref.isdigit()
            else client.get_model_version_by_alias(name, ref)
        )
    except MlflowException as err:
        raise LookupError(
            f"registered model '{name}' has no version or alias '{ref}' at {tracking_uri}: "
            f"{err.message}"
        ) from None
    digest = (version.tags or {}).get(CHECKSUM_TAG)
    if not digest:
        raise ChecksumError(
            f"{name} version {version.version} has no {CHECKSUM_TAG} tag: it was not "
            "registered by this pipeline and cannot be verified"
        )
    return str(version.version), digest, (version.tags or {}).get("vlora.design")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _cached_copy_is_good(target: Path, digest: str) -> bool:
    listing = target / CHECKSUM_FILE
    if not listing.is_file() or digest_of(listing.read_bytes()) != digest:
        return False
    try:
        verify_checksums(target / MODEL_ARTIFACT, json.loads(listing.read_bytes()))
    except (ChecksumError, FileNotFoundError) as err:
        logger.warning("[serve] cached copy %s is not intact (%s): fetching it again", target, err)
        return False
    return True


def fetch_verified(
    name: str, version: str, tracking_uri: str, cache_dir: str | os.PathLike | None = None
) -> Path:
    """The verified `model/` folder of `name` version `version` on this node."""
    number, digest, _ = resolve_version(name, version, tracking_uri)
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    parent = root / _safe(name)
    target = parent / number
    if _cached_copy_is_good(target, digest):
        return target / MODEL_ARTIFACT
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{number}-", dir=parent))
    try:
        model_dir = load_registered_model(name, number, tracking_uri, staging)  # verifies
        if model_dir != staging / MODEL_ARTIFACT:
            model_dir.rename(staging / MODEL_ARTIFACT)
        listing = checksums_json(folder_checksums(staging / MODEL_ARTIFACT))
        if digest_of(listing) != digest:  # the files passed the registered list: cannot differ
            raise ChecksumError(f"{name} version {number}: checksum list mismatch after download")
        (staging / CHECKSUM_FILE).write_bytes(listing)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)  # a stale or corrupt copy
        try:
            staging.rename(target)
        except OSError:  # another replica put its copy there first
            if not _cached_copy_is_good(target, digest):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("[serve] %s version %s verified at %s", name, number, target)
    return target / MODEL_ARTIFACT
