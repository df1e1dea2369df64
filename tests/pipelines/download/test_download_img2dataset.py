"""The real img2dataset path against a loopback server (slow: five img2dataset runs in all).

1. Good images and every kind of broken URL: the summary counts match, per reason, exactly what
   the server served; a rerun of the finished stage does no work.
2. The stage is killed (SIGKILL to its whole process group) after its first shard is done and
   rerun: every successful sample ends up exactly once, none lost, and finished shards are not
   downloaded again.
3. `distributor: ray` (one Ray task per shard on the pipeline's cluster) writes the same shards
   and counts as the multiprocessing default, under the same content key.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.config import load_pipeline_config
from pipelines.core.chain import stage_dir
from pipelines.core.stage import MANIFEST
from pipelines.download import stage as download
from pipelines.download.loopback import Fault, LoopbackImageServer, sample_jpeg

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]

SERVED_FAULTS = {
    Fault.NOT_FOUND: 2,
    Fault.SERVER_ERROR: 1,
    Fault.TIMEOUT: 1,
    Fault.NOT_IMAGE: 2,
    Fault.TRUNCATED: 1,
    Fault.EMPTY: 1,
}
EXPECTED_REASONS = {
    "http_404": 2,
    "http_500": 1,
    "timeout": 1,
    "not_an_image": 2,
    "truncated": 1,
    "empty_body": 1,
}


def good_files(n: int) -> dict[str, bytes]:
    return {f"good/{i}.jpg": sample_jpeg(80 + 8 * i, seed=i) for i in range(n)}


def write_url_list(path: Path, urls: list[str | None], captions: list[str | None]) -> None:
    rows = [
        {
            "image_url": url,
            "laion_2b": f"alt {i}",
            "laion_coco": caption,
            "capsfusion": f"fused {i}",
        }
        for i, (url, caption) in enumerate(zip(urls, captions, strict=True))
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)


def pipeline_config(workdir: Path, url_list: Path, **download_fields) -> dict:
    return {
        "name": "t",
        "preset": "tiny-llama",
        "workdir": str(workdir),
        "download": {
            "pretrain": {
                "kind": "capsfusion",
                "url_list": str(url_list),
                "caption_column": "laion_coco",
            },
            "sft": {"kind": "none"},
            "image_size": 64,
            "processes": 1,
            "retries": 0,
            **download_fields,
        },
    }


def test_counts_per_failure_reason_match_what_was_served(
    tmp_path, monkeypatch, shard_samples
) -> None:
    files = good_files(6)
    with LoopbackImageServer(files=files, slow_seconds=15) as server:
        urls = [server.url(p) for p in files]
        for fault, count in SERVED_FAULTS.items():
            urls += [server.fault_url(fault, f"{fault.value}-{i}.jpg") for i in range(count)]
        order = [7, 0, 3, 12, 9, 1, 13, 4, 10, 2, 8, 5, 11, 6]  # mix faults into both shards
        urls = [urls[i] for i in order]
        captions = [f"coco {u.rsplit('/', 1)[-1]}" for u in urls]
        # rows dropped before any download, each counted by reason
        urls += [None, urls[0], server.url("good/0-no-caption.jpg")]
        captions += ["no url", "duplicate", None]
        write_url_list(tmp_path / "caps.parquet", urls, captions)
        config = load_pipeline_config(
            pipeline_config(
                tmp_path / "work",
                tmp_path / "caps.parquet",
                threads=4,
                timeout=3,  # generous for loaded CI machines; the stalled URL waits 15 s
                number_sample_per_shard=8,
                input_chunk_rows=8,
                max_failed_fraction=0.9,
            )
        )
        result = download.run(config)
        requests = dict(server.requests)

    summary = result.summary
    assert summary["source"]["skipped"] == {
        "duplicate_url": 1,
        "missing_caption": 1,
        "missing_url": 1,
    }
    pretrain = summary["pretrain"]
    assert (pretrain["total"], pretrain["success"], pretrain["failed"]) == (14, 6, 8)
    assert pretrain["shards"] == 2
    assert pretrain["failed_by_reason"] == EXPECTED_REASONS
    assert pretrain["by_status"] == {"failed_to_download": 4, "failed_to_resize": 4, "success": 6}
    assert all("/__fault__/" in u for ex in pretrain["failure_examples"].values() for u in ex)
    assert all(count == 1 for count in requests.values())  # retries=0: one request per URL
    assert len(requests) == 14

    samples = shard_samples(result.artifacts["pretrain_shards"])
    assert len(samples) == 6
    for sample in samples.values():
        meta = json.loads(sample["json"])
        assert meta["url"].rsplit("/", 1)[-1].startswith(tuple("012345"))
        assert sample["txt"] == meta["laion_coco"] == f"coco {meta['url'].rsplit('/', 1)[-1]}"
        assert meta["laion_2b"].startswith("alt ") and meta["capsfusion"].startswith("fused ")
        assert max(sample["jpg"]) == 64
    assert not list(Path(result.artifacts["pretrain_shards"]).glob("_tmp"))

    # the finished stage: no work, not even a server (it is down) or an img2dataset process
    import pipelines.download.img2dataset_runner as runner

    monkeypatch.setattr(runner, "run_img2dataset", lambda *a, **k: pytest.fail("img2dataset ran"))
    started = time.perf_counter()
    again = download.run(config)
    assert again.cached and again.summary == summary
    assert time.perf_counter() - started < 2.0


def test_killed_stage_resumes_with_every_sample_exactly_once(tmp_path, shard_samples) -> None:
    files = good_files(12)
    with LoopbackImageServer(files=files, delay_seconds=0.25) as server:
        urls = [server.url(p) for p in files]
        urls.insert(5, server.fault_url(Fault.NOT_FOUND, "gone.jpg"))
        write_url_list(tmp_path / "caps.parquet", urls, [f"c{i}" for i in range(len(urls))])
        data = pipeline_config(
            tmp_path / "work",
            tmp_path / "caps.parquet",
            threads=1,  # 4 samples x 0.25 s per shard: the kill lands part-way
            timeout=5,
            number_sample_per_shard=4,
            input_chunk_rows=4,
            max_failed_fraction=0.2,
        )
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(data))
        config = load_pipeline_config(data)
        shards = Path(stage_dir(config, "download")) / "shards"

        with open(tmp_path / "killed-run.log", "w") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pipelines",
                    "download",
                    "--config",
                    str(tmp_path / "run.yaml"),
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the kill takes its workers too
            )
        deadline = time.monotonic() + 180
        while not (shards / "00000_stats.json").exists():
            assert process.poll() is None, (tmp_path / "killed-run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the first shard never finished"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

        done_before = sorted(p.name for p in shards.glob("*_stats.json"))
        assert done_before and len(done_before) < 4, done_before
        assert not (shards.parent / MANIFEST).exists()
        first_shard_urls = pq.read_table(shards / "00000.parquet").column("url").to_pylist()

        result = download.run(config)
        requests = dict(server.requests)

    assert not result.cached
    pretrain = result.summary["pretrain"]
    assert (pretrain["total"], pretrain["success"], pretrain["shards"]) == (13, 12, 4)
    assert pretrain["failed_by_reason"] == {"http_404": 1}
    samples = shard_samples(result.artifacts["pretrain_shards"])  # asserts no duplicate keys
    indices = sorted(json.loads(s["json"])["source_index"] for s in samples.values())
    assert indices == [i for i in range(13) if i != 5]
    # the shard finished before the kill was not downloaded again
    for url in first_shard_urls:
        assert requests[url.split("/", 3)[3]] == 1


def test_ray_distributor_writes_what_multiprocessing_writes(tmp_path, shard_samples) -> None:
    import ray

    files = good_files(6)
    with LoopbackImageServer(files=files) as server:
        urls = [server.url(p) for p in files]
        urls += [server.fault_url(Fault.NOT_FOUND, "gone.jpg")]
        urls += [server.fault_url(Fault.NOT_IMAGE, "text.jpg")]
        write_url_list(tmp_path / "caps.parquet", urls, [f"coco {i}" for i in range(len(urls))])
        fields = {
            "threads": 2,
            "timeout": 3,
            "number_sample_per_shard": 4,
            "input_chunk_rows": 4,
            "max_failed_fraction": 0.9,
        }
        results = {}
        for distributor in ("ray", "multiprocessing"):
            config = load_pipeline_config(
                pipeline_config(
                    tmp_path / distributor,
                    tmp_path / "caps.parquet",
                    distributor=distributor,
                    **fields,
                ),
                ["ray.num_cpus=4"],
            )
            try:
                results[distributor] = download.run(config)
            finally:
                ray.shutdown()  # the ray path started the pipeline's private cluster

    on_ray, on_processes = results["ray"], results["multiprocessing"]
    assert on_ray.key == on_processes.key  # where it ran is not part of what it wrote
    for field in ("total", "success", "failed", "shards", "failed_by_reason"):
        assert on_ray.summary["pretrain"][field] == on_processes.summary["pretrain"][field], field
    assert on_ray.summary["pretrain"]["shards"] == 2
    assert on_ray.summary["pretrain"]["failed_by_reason"] == {"http_404": 1, "not_an_image": 1}

    def captions_by_url(result) -> dict[str, str]:
        samples = shard_samples(result.artifacts["pretrain_shards"])
        return {json.loads(s["json"])["url"]: s["txt"] for s in samples.values()}

    assert captions_by_url(on_ray) == captions_by_url(on_processes)
    assert len(captions_by_url(on_ray)) == 6
    log = Path(on_ray.output_dir, "logs", "img2dataset.log").read_text()
    assert "one Ray task per shard on the cluster at 127.0.0.1:" in log
    assert (
        "one Ray task per shard"
        not in Path(on_processes.output_dir, "logs", "img2dataset.log").read_text()
    )
