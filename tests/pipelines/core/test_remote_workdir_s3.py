"""A remote workdir (`s3://…`, as in paper.yaml) through s3fs against a loopback S3 server (moto):
the fs helpers and the content-addressed stage runner behave as on a local folder."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import fsspec.config
import pytest

from pipelines.core import fs
from pipelines.core.stage import MANIFEST, read_manifest, run_stage


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, monkeypatch) -> str:
    """A fresh bucket; s3fs reaches the loopback server through fsspec's per-protocol config
    (what FSSPEC_S3_ENDPOINT_URL sets for an S3-compatible store in production)."""
    import s3fs

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": s3_endpoint})
    s3fs.S3FileSystem.clear_instance_cache()
    name = f"vlora-{uuid.uuid4().hex[:8]}"
    filesystem, _ = fs.filesystem(f"s3://{name}")
    filesystem.mkdir(name)
    yield f"s3://{name}"
    s3fs.S3FileSystem.clear_instance_cache()


def test_fs_helpers_on_s3(bucket) -> None:
    assert not fs.is_local(bucket)
    target = fs.join(bucket, "runs", "a", "result.json")
    assert target == f"{bucket}/runs/a/result.json"
    assert not fs.exists(target)
    fs.write_json_atomic(target, {"rows": 3, "skipped": {"corrupt": 1}})
    assert fs.exists(target)
    assert fs.read_json(target) == {"rows": 3, "skipped": {"corrupt": 1}}
    fs.write_json_atomic(target, {"rows": 4})  # a rewrite replaces the whole object
    assert fs.read_json(target) == {"rows": 4}
    fs.check_writable(fs.join(bucket, "storage"), "pretrain.storage_path")


def test_check_writable_names_the_field_for_a_missing_bucket(bucket) -> None:
    with pytest.raises(ValueError, match=r"pretrain\.storage_path: 's3://no-such-bucket-"):
        fs.check_writable(f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/x", "pretrain.storage_path")


def test_stage_runner_caches_and_forces_on_s3(bucket) -> None:
    workdir = fs.join(bucket, "runs", "paper")
    calls: list[str] = []

    def body(output_dir: str) -> dict:
        calls.append(output_dir)
        fs.write_json_atomic(fs.join(output_dir, f"part-{len(calls)}.json"), {"n": len(calls)})
        return {"summary": {"rows": 10, "skipped": {"too_long": 2}}}

    first = run_stage("features", workdir, {"batch_size": 8}, body)
    assert first.output_dir.startswith(f"{workdir}/features/") and not first.cached
    assert fs.exists(fs.join(first.output_dir, MANIFEST))
    assert read_manifest(first.output_dir) == first.model_copy(update={"cached": False})

    again = run_stage("features", workdir, {"batch_size": 8}, body)
    assert again.cached and again.fingerprint == first.fingerprint and len(calls) == 1

    downstream = run_stage("pretrain", workdir, {"lr": 1.0}, body, upstream={"features": first})
    assert downstream.upstream == {"features": first.fingerprint}

    forced = run_stage("features", workdir, {"batch_size": 8}, body, force=True)
    assert not forced.cached and len(calls) == 3
    # a forced stage starts from scratch: the first run's part file is gone
    filesystem, path = fs.filesystem(forced.output_dir)
    parts = sorted(p.rsplit("/", 1)[-1] for p in filesystem.ls(path, refresh=True))
    assert parts == [MANIFEST, "part-3.json"]


def test_a_file_another_process_wrote_is_seen_after_a_listing(bucket, s3_endpoint) -> None:
    """Another writer (here boto3, as a Ray task on another node would be) adds a file to a
    folder this process listed before: `exists` and listings see it (no stale listing cache)."""
    import boto3

    folder = fs.join(bucket, "shards")
    fs.write_json_atomic(fs.join(folder, "00000_stats.json"), {"ok": True})
    filesystem, path = fs.filesystem(folder)
    assert [p.rsplit("/", 1)[-1] for p in filesystem.ls(path)] == ["00000_stats.json"]
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(
        Bucket=bucket.removeprefix("s3://"), Key="shards/00001_stats.json", Body=b"{}"
    )
    assert fs.exists(fs.join(folder, "00001_stats.json"))
    filesystem, path = fs.filesystem(folder)
    assert len(filesystem.ls(path)) == 2


def test_local_copy_of_a_remote_checkpoint_keeps_its_layout(bucket, tmp_path, monkeypatch) -> None:
    """SFT on a cluster starts from the pre-training export in object storage: the local copy
    has the checkpoint's files at its top (not nested in a folder named after the source)."""
    from pipelines.training.export import local_copy

    monkeypatch.setenv("VLORA_CACHE_DIR", str(tmp_path / "cache"))
    export = fs.join(bucket, "pretrain", "abc", "model")
    fs.write_json_atomic(fs.join(export, "vlora_config.json"), {"kind": "vlora"})
    fs.write_json_atomic(fs.join(export, "generator", "weights.json"), {"w": [1, 2]})
    copy = Path(local_copy(export))
    found = sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file())
    assert found == ["generator/weights.json", "vlora_config.json"]
    assert local_copy(export) == str(copy)  # cached: the second call downloads nothing
    (copy / "vlora_config.json").unlink()  # a copy without its config (an older, nested one)
    assert (Path(local_copy(export)) / "vlora_config.json").is_file()  # is made again
    with pytest.raises(FileNotFoundError, match="no files under"):
        local_copy(fs.join(bucket, "missing"))
