"""A remote workdir (`s3://…`, as in paper.yaml) through s3fs against a loopback S3 server (moto):
the fs helpers and the content-addressed stage runner behave as on a local folder."""

from __future__ import annotations

import socket
import uuid

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
