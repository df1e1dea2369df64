"""LLaVA-Pretrain (JSON + image folder) → the same webdataset shards img2dataset writes.

LLaVA-Pretrain (blip_laion_cc_sbu_558k.json) records look like
`{"id": "004539375", "image": "00453/004539375.jpg", "conversations": [{"from": "human",
"value": "<image>\\n…"}, {"from": "gpt", "value": "<caption>"}]}`; the caption is the first gpt
turn. The images are already on disk (or in a bucket), so nothing is downloaded: each shard is
written here with img2dataset's layout and key scheme (`{id:05d}.tar` with `{key}.jpg/.txt/.json`,
`{id:05d}.parquet` with every row's status, `{id:05d}_stats.json` last), resized by the same
StrictResizer, so the features stage and the summary cannot tell the two apart. A missing or
broken file is a counted failure (`missing_file`, `truncated`, …), never a substitute image.
"""

from __future__ import annotations

import hashlib
import io
import math
import tarfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.config.download import LlavaPretrainSource
from pipelines.core import fs
from pipelines.core.verbosity import progress_bars_enabled
from pipelines.download.capsfusion import (
    PreparedSource,
    load_prepared,
    prepare_from_batches,
    read_chunks,
    select_rows,
)
from pipelines.download.shard_stats import SUCCESS, shard_name, stats_path

KEPT_COLUMNS = ["blip_caption", "llava_id"]


def first_gpt_turn(record: dict[str, Any]) -> str | None:
    for turn in record.get("conversations") or []:
        if isinstance(turn, dict) and turn.get("from") == "gpt":
            value = turn.get("value")
            return value.strip() if isinstance(value, str) else None
    return None


def prepare_llava_pretrain(
    source: LlavaPretrainSource, samples: int | None, seed: int, chunk_rows: int, folder: str
) -> PreparedSource:
    existing = load_prepared(folder)
    if existing is not None:
        return existing
    records = fs.read_json(source.json_path)
    if not isinstance(records, list):
        raise ValueError(f"download.pretrain.json_path: {source.json_path} is not a JSON list")
    chosen = select_rows(len(records), samples, seed)
    urls, captions, ids = [], [], []
    for index in chosen:
        record = records[index] if isinstance(records[index], dict) else {}
        image = record.get("image")
        urls.append(fs.join(source.image_folder, image) if isinstance(image, str) else None)
        captions.append(first_gpt_turn(record))
        ids.append(str(record.get("id", index)))
    table = pa.table(
        {
            "url": pa.array(urls, pa.string()),
            "blip_caption": pa.array(captions, pa.string()),
            "llava_id": pa.array(ids, pa.string()),
            "source_index": pa.array(chosen, pa.int64()),
        }
    )
    return prepare_from_batches(
        [table], folder, len(records), len(chosen), "blip_caption", KEPT_COLUMNS, chunk_rows
    )


def _load(url: str) -> tuple[bytes | None, str | None]:
    try:
        filesystem, path = fs.filesystem(url)
        with filesystem.open(path, "rb") as handle:
            return handle.read(), None
    except FileNotFoundError:
        return None, f"file not found: {url}"
    except OSError as err:
        return None, f"read error: {err}"


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def write_shard(
    rows: pa.Table,
    shard_id: int,
    folder: str,
    resizer: Any,
    per_shard: int,
    threads: int,
) -> None:
    """One shard: tar + parquet written under temporary names then renamed, stats last."""
    from img2dataset.downloader import compute_key

    started = time.time()
    columns = rows.to_pydict()
    n = rows.num_rows
    oom_sample = math.ceil(math.log10(per_shard))

    def process(i: int) -> tuple[bytes | None, dict[str, Any]]:
        url = columns["url"][i]
        meta: dict[str, Any] = {k: columns[k][i] for k in ("url", "caption", *KEPT_COLUMNS)}
        meta.update(
            key=compute_key(i, shard_id, oom_sample, 5),
            source_index=columns["source_index"][i],
            status="failed_to_download",
            error_message=None,
            width=None,
            height=None,
            original_width=None,
            original_height=None,
            sha256=None,
        )
        data, error = _load(url)
        if data is None:
            meta["error_message"] = error
            return None, meta
        image, width, height, original_width, original_height, error = resizer(io.BytesIO(data))
        if error is not None:
            meta.update(status="failed_to_resize", error_message=error)
            return None, meta
        meta.update(
            status=SUCCESS,
            width=width,
            height=height,
            original_width=original_width,
            original_height=original_height,
            sha256=hashlib.sha256(data).hexdigest(),
        )
        return image, meta

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(process, range(n)))

    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w") as tar:
        for image, meta in results:
            if image is None:
                continue
            key = meta["key"]
            _tar_member(tar, f"{key}.jpg", image)
            _tar_member(tar, f"{key}.txt", str(meta["caption"]).encode())
            _tar_member(tar, f"{key}.json", _json_bytes(meta))
    name = shard_name(shard_id)
    fs.write_bytes_atomic(fs.join(folder, f"{name}.tar"), tar_buffer.getvalue())
    parquet_buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([meta for _, meta in results]), parquet_buffer)
    fs.write_bytes_atomic(fs.join(folder, f"{name}.parquet"), parquet_buffer.getvalue())
    statuses = Counter(meta["status"] for _, meta in results)
    errors = Counter(meta["error_message"] or SUCCESS for _, meta in results)
    fs.write_json_atomic(
        stats_path(folder, shard_id),
        {
            "count": n,
            "successes": statuses[SUCCESS],
            "failed_to_download": statuses["failed_to_download"],
            "failed_to_resize": statuses["failed_to_resize"],
            "duration": time.time() - started,
            "start_time": started,
            "end_time": time.time(),
            "status_dict": dict(errors),
        },
    )


def _json_bytes(meta: dict[str, Any]) -> bytes:
    import json

    return json.dumps(meta, indent=4).encode()


def write_local_shards(
    prepared: PreparedSource,
    folder: str,
    per_shard: int,
    resizer: Any,
    threads: int,
    skip: set[int],
) -> float:
    """Write every shard not in `skip` (finished, validated shards); seconds taken."""
    from tqdm import tqdm

    started = time.perf_counter()
    shard_rows = prepared.shard_rows(per_shard)
    shard_id = 0
    with tqdm(
        total=len(shard_rows),
        initial=len(skip),
        unit="shard",
        desc="llava-pretrain",
        disable=not progress_bars_enabled(),
    ) as bar:
        for table in read_chunks(prepared):
            for offset in range(0, table.num_rows, per_shard):
                if shard_id not in skip:
                    write_shard(
                        table.slice(offset, per_shard),
                        shard_id,
                        folder,
                        resizer,
                        per_shard,
                        threads,
                    )
                    bar.update(1)
                shard_id += 1
    return time.perf_counter() - started
