"""Failure reasons, the strict resizer, shard validation and summaries."""

from __future__ import annotations

import io
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core import fs
from pipelines.download.loopback import NOT_AN_IMAGE, sample_jpeg
from pipelines.download.report import DownloadFailedError, check_failures, format_report
from pipelines.download.shard_stats import failure_reason, summarize_shards, validate_shard
from pipelines.download.strict_resizer import StrictResizer


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("HTTP Error 404: Not Found", "http_404"),
        ("HTTP Error 500: Internal Server Error", "http_500"),
        ("timed out", "timeout"),
        ("The read operation timed out", "timeout"),
        ("<urlopen error [Errno 111] Connection refused>", "connection_error"),
        ("IncompleteRead(10 bytes read, 90 more expected)", "incomplete_read"),
        ("Image decoding error", "not_an_image"),
        ("empty body", "empty_body"),
        ("OpenCV(4.14.0) error: (-215:Assertion failed) !buf.empty() in imdecode_", "empty_body"),
        ("truncated image: image file is truncated (80 bytes not processed)", "truncated"),
        ("corrupt image: broken data stream", "corrupt_image"),
        ("Use of image disallowed by X-Robots-Tag directive", "disallowed_by_robots"),
        ("file not found: /x/y.jpg", "missing_file"),
        ("something new", "other"),
        (None, "other"),
    ],
)
def test_failure_reasons_are_stable_names(message: str | None, reason: str) -> None:
    assert failure_reason(message) == reason


def test_strict_resizer_names_empty_truncated_and_non_image_bodies() -> None:
    resizer = StrictResizer(image_size=32, resize_mode="border", resize_only_if_bigger=False)
    good = sample_jpeg(64)
    image, width, height, *_, error = resizer(io.BytesIO(good))
    assert error is None and (width, height) == (32, 32) and image[:2] == b"\xff\xd8"
    cases = {b"": "empty_body", good[: len(good) // 2]: "truncated", NOT_AN_IMAGE: "not_an_image"}
    for body, reason in cases.items():
        image, *_, error = resizer(io.BytesIO(body))
        assert image is None and failure_reason(error) == reason


def _write_shard(folder, shard_id, statuses, images, stats_count=None) -> None:
    name = f"{shard_id:05d}"
    rows = [
        {
            "url": f"u{i}",
            "status": s,
            "error_message": None if s == "success" else "HTTP Error 404: Not Found",
        }
        for i, s in enumerate(statuses)
    ]
    pq.write_table(pa.Table.from_pylist(rows), f"{folder}/{name}.parquet")
    with tarfile.open(f"{folder}/{name}.tar", "w") as tar:
        for i in range(images):
            data = b"jpg"
            info = tarfile.TarInfo(f"{shard_id}{i:03d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    fs.write_json_atomic(
        f"{folder}/{name}_stats.json",
        {
            "count": stats_count if stats_count is not None else len(statuses),
            "successes": statuses.count("success"),
            "duration": 1.5,
        },
    )


def test_validate_and_summarize_shards(tmp_path) -> None:
    folder = str(tmp_path)
    _write_shard(folder, 0, ["success", "success", "failed_to_download"], images=2)
    _write_shard(folder, 1, ["success", "failed_to_download"], images=0)  # tar lost an image
    _write_shard(folder, 2, ["success"], images=1, stats_count=5)
    assert validate_shard(folder, 0, 3) is None
    assert "images in tar" in validate_shard(folder, 1, 2)
    assert "expected 1" in validate_shard(folder, 2, 1)
    assert "not finished" in validate_shard(folder, 3, 4)
    summary = summarize_shards(folder, [0]).to_json()
    assert summary["total"] == 3 and summary["success"] == 2 and summary["failed"] == 1
    assert summary["failed_by_reason"] == {"http_404": 1}
    assert summary["failure_examples"] == {"http_404": ["u2"]}


def test_failure_threshold_lists_reasons() -> None:
    pretrain = {
        "total": 10,
        "success": 6,
        "failed": 4,
        "shards": 1,
        "by_status": {"success": 6, "failed_to_download": 4},
        "failed_by_reason": {"http_404": 3, "timeout": 1},
        "failure_examples": {"http_404": ["http://a/1"], "timeout": ["http://a/2"]},
    }
    check_failures(pretrain, 0.4, "/shards")
    with pytest.raises(DownloadFailedError, match=r"4 of 10.*http_404: 3, timeout: 1"):
        check_failures(pretrain, 0.3, "/shards")
    source = {
        "kind": "capsfusion",
        "caption_column": "capsfusion",
        "rows_available": 12,
        "rows_selected": 11,
        "rows_kept": 10,
        "chunks": 1,
        "skipped": {"duplicate_url": 1},
    }
    report = format_report({"source": source, "pretrain": pretrain, "sft": {"kind": "none"}})
    assert "| http_404 | 3 | http://a/1 |" in report
    assert "duplicate_url: 1" in report
