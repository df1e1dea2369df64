"""Accounting for every sample of a webdataset shard folder written by img2dataset (or by us).

Per shard `{id:05d}`, img2dataset writes `.tar` (successful samples only), `.parquet` (one row per
input row: key, url, caption, status, error_message, …) and, last, `_stats.json` (counts; its
presence marks the shard done for incremental mode). Failures are classified into stable reason
names from img2dataset's error messages:

| reason | source |
|---|---|
| `http_404`, `http_500`, … | "HTTP Error 404: Not Found" |
| `timeout` | "timed out", "The read operation timed out" |
| `connection_error` | refused / reset / DNS / other URLError |
| `incomplete_read` | the server sent less than its Content-Length |
| `empty_body` | a 200 response without bytes |
| `truncated` | a cut-off image (StrictResizer) |
| `corrupt_image` | an image file PIL cannot decode (StrictResizer) |
| `not_an_image` | bytes no decoder recognises ("Image decoding error") |
| `disallowed_by_robots`, `hash_mismatch`, `too_small`, `too_large`, `bad_aspect_ratio`, `missing_file` | as named |
| `other` | anything else (examples of the raw message are kept) |
"""

from __future__ import annotations

import re
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from pipelines.core import fs

SUCCESS = "success"
EXAMPLES_PER_REASON = 3

_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"empty body|!buf\.empty\(\)", "empty_body"),
    (r"^truncated image", "truncated"),
    (r"^corrupt image", "corrupt_image"),
    (r"image decoding error", "not_an_image"),
    (r"timed out|timeout", "timeout"),
    (r"incompleteread|incomplete read", "incomplete_read"),
    (r"x-robots-tag", "disallowed_by_robots"),
    (r"hash mismatch", "hash_mismatch"),
    (r"image too small", "too_small"),
    (r"image area too large", "too_large"),
    (r"aspect ratio too large", "bad_aspect_ratio"),
    (r"^file not found", "missing_file"),
    (
        r"connection refused|connection reset|remote end closed|urlopen error|"
        r"name or service not known|nodename nor servname|no route to host|ssl",
        "connection_error",
    ),
)


def failure_reason(error_message: str | None) -> str:
    """Stable reason name for an img2dataset error message (see the module docstring)."""
    message = (error_message or "").strip().lower()
    match = re.search(r"http error (\d{3})", message)
    if match:
        return f"http_{match.group(1)}"
    for pattern, reason in _PATTERNS:
        if re.search(pattern, message):
            return reason
    return "other"


def shard_name(shard_id: int) -> str:
    return f"{shard_id:05d}"


def stats_path(folder: str, shard_id: int) -> str:
    return fs.join(folder, f"{shard_name(shard_id)}_stats.json")


def tar_members(url: str) -> list[str]:
    filesystem, path = fs.filesystem(url)
    with filesystem.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
        return tar.getnames()


def read_shard_table(folder: str, shard_id: int) -> Any:
    filesystem, path = fs.filesystem(fs.join(folder, f"{shard_name(shard_id)}.parquet"))
    with filesystem.open(path, "rb") as handle:
        return pq.read_table(handle)


def validate_shard(folder: str, shard_id: int, expected_rows: int) -> str | None:
    """None when the shard is complete and consistent, else what is wrong with it."""
    name = shard_name(shard_id)
    if not fs.exists(stats_path(folder, shard_id)):
        return "not finished (no stats file)"
    try:
        stats = fs.read_json(stats_path(folder, shard_id))
        table = read_shard_table(folder, shard_id)
        members = tar_members(fs.join(folder, f"{name}.tar"))
    except (OSError, ValueError, tarfile.TarError) as err:
        return f"unreadable ({err})"
    if table.num_rows != expected_rows or stats.get("count") != expected_rows:
        return f"{table.num_rows} rows, stats count {stats.get('count')}, expected {expected_rows}"
    successes = table.column("status").to_pylist().count(SUCCESS)
    images = sum(1 for m in members if m.endswith(".jpg"))
    if successes != images or stats.get("successes") != successes:
        return f"{successes} successes in parquet, {images} images in tar, stats {stats.get('successes')}"
    return None


@dataclass
class ShardSummary:
    """Counts over a shard folder, by status and by failure reason."""

    shards: int = 0
    total: int = 0
    by_status: Counter = field(default_factory=Counter)
    failed_by_reason: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def success(self) -> int:
        return self.by_status.get(SUCCESS, 0)

    @property
    def failed(self) -> int:
        return self.total - self.success

    def add_rows(self, urls: list[str], statuses: list[str], errors: list[str | None]) -> None:
        for url, status, error in zip(urls, statuses, errors, strict=True):
            self.total += 1
            self.by_status[status] += 1
            if status == SUCCESS:
                continue
            reason = failure_reason(error)
            self.failed_by_reason[reason] += 1
            examples = self.examples.setdefault(reason, [])
            if len(examples) < EXAMPLES_PER_REASON:
                examples.append(f"{url} ({error})" if reason == "other" else url)

    def to_json(self) -> dict[str, Any]:
        return {
            "shards": self.shards,
            "total": self.total,
            "success": self.success,
            "failed": self.failed,
            "by_status": dict(sorted(self.by_status.items())),
            "failed_by_reason": dict(self.failed_by_reason.most_common()),
            "failure_examples": {k: self.examples[k] for k in sorted(self.examples)},
        }


def summarize_shards(folder: str, shard_ids: list[int]) -> ShardSummary:
    summary = ShardSummary()
    for shard_id in shard_ids:
        table = read_shard_table(folder, shard_id)
        summary.shards += 1
        summary.add_rows(
            table.column("url").to_pylist(),
            table.column("status").to_pylist(),
            table.column("error_message").to_pylist(),
        )
        stats = fs.read_json(stats_path(folder, shard_id))
        summary.seconds += float(stats.get("duration", 0.0))
    return summary
