"""Content-addressed, resumable stages.

Every stage writes into `{workdir}/{stage}/{key}` where `key` hashes the stage's config (minus
fields that cannot change the output, such as worker counts) together with the fingerprints of
its upstream results (digests of their manifests). `_MANIFEST.json`, written last, marks the directory complete:

- rerunning a finished stage is a no-op (`StageResult.cached` is True);
- a changed config or a changed upstream gives a new key, so downstream results are never stale;
- a killed stage leaves no manifest: the rerun resumes in the same directory, and the stage body
  skips the shards it already finished (per-shard markers or validated outputs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipelines.core import fs

logger = logging.getLogger(__name__)

MANIFEST = "_MANIFEST.json"


class StageResult(BaseModel):
    """What a stage returns and records in its manifest."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    key: str = Field(description="Content hash naming the output directory.")
    output_dir: str
    cached: bool = Field(default=False, description="True when a finished result was reused.")
    summary: dict[str, Any] = Field(default_factory=dict, description="Counts, skips by reason.")
    metrics: dict[str, float] = Field(default_factory=dict)
    artifacts: dict[str, str] = Field(default_factory=dict, description="Name → path of reports.")
    upstream: dict[str, str] = Field(
        default_factory=dict, description="Stage → fingerprint of the upstream result used."
    )
    seconds: float = 0.0
    finished_at: str = ""
    fingerprint: str = Field(
        default="",
        description="Digest of this finished result; downstream keys include it, so redoing a "
        "stage (force) invalidates everything after it.",
    )

    @property
    def manifest_path(self) -> str:
        return fs.join(self.output_dir, MANIFEST)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def stage_key(stage: str, config: dict[str, Any], upstream: dict[str, str]) -> str:
    payload = canonical_json({"stage": stage, "config": config, "upstream": upstream})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def source_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def read_manifest(output_dir: str) -> StageResult | None:
    path = fs.join(output_dir, MANIFEST)
    if not fs.exists(path):
        return None
    data = fs.read_json(path)
    return StageResult.model_validate(data["result"])


def load_result(output_dir: str) -> StageResult:
    """A finished upstream stage, or a clear error if it never completed."""
    result = read_manifest(output_dir)
    if result is None:
        raise FileNotFoundError(
            f"{output_dir} has no {MANIFEST}: that stage did not finish (rerun it first)"
        )
    return result


def run_stage(
    stage: str,
    workdir: str,
    config: BaseModel | dict[str, Any],
    body: Callable[[str], StageResult | dict[str, Any]],
    upstream: dict[str, StageResult] | None = None,
    hash_exclude: set[str] | None = None,
    force: bool = False,
) -> StageResult:
    """Run `body(output_dir)` unless a finished result exists; write the manifest last.

    `body` returns a StageResult-like dict (summary, metrics, artifacts); the runner fills in
    the key, directory, upstream and timing.
    """
    upstream = upstream or {}
    upstream_keys = {name: result.fingerprint for name, result in sorted(upstream.items())}
    full_config = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config)
    hashed_config = {k: v for k, v in full_config.items() if k not in (hash_exclude or set())}
    key = stage_key(stage, hashed_config, upstream_keys)
    output_dir = fs.join(workdir, stage, key)
    existing = read_manifest(output_dir)
    if existing is not None and not force:
        logger.info("[%s] finished result found at %s: nothing to do", stage, output_dir)
        return existing.model_copy(update={"cached": True})
    if force and fs.exists(output_dir):
        # A forced rerun starts from scratch: per-shard markers must not be reused.
        filesystem, path = fs.filesystem(output_dir)
        filesystem.rm(path, recursive=True)
        logger.info("[%s] force: redoing %s from scratch", stage, output_dir)
    fs.makedirs(output_dir)
    logger.info("[%s] started: %s", stage, output_dir)
    started = time.perf_counter()
    produced = body(output_dir)
    fields = produced.model_dump() if isinstance(produced, StageResult) else dict(produced)
    fields.update(
        stage=stage,
        key=key,
        output_dir=output_dir,
        cached=False,
        upstream=upstream_keys,
        seconds=round(time.perf_counter() - started, 3),
    )
    fields["finished_at"] = datetime.now(UTC).isoformat()
    fields["fingerprint"] = ""
    result = StageResult.model_validate(fields)
    digest = hashlib.sha256(canonical_json(result.model_dump(mode="json")).encode())
    result.fingerprint = digest.hexdigest()[:16]
    manifest = {
        "result": result.model_dump(mode="json"),
        "config": full_config,
        "upstream_manifests": {n: r.manifest_path for n, r in upstream.items()},
        "source_commit": source_commit(),
        "host": platform.node(),
    }
    fs.write_json_atomic(fs.join(output_dir, MANIFEST), manifest)
    # one line per stage end; its summary is in the manifest, the artifact and the stage's report
    logger.info("[%s] done in %.1f s", stage, result.seconds)
    logger.debug("[%s] summary: %s", stage, result.summary)
    return result
