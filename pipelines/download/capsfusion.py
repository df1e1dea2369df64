"""CapsFusion-style URL lists → a seeded subset → bounded img2dataset input chunks.

Input: Parquet with an image URL column and caption columns (CapsFusion-120M: image_url,
laion_2b, laion_coco, capsfusion): one file, a folder of *.parquet or a glob, on a local disk or
any fsspec filesystem. Memory stays bounded by one row group plus one output chunk: rows are
chosen by global index (seeded, without replacement, in source order) from the files' metadata,
then read row group by row group.

Output chunk files `chunk-00000.parquet`, … hold at most `chunk_rows` rows with columns
`url`, `caption` (the chosen caption), every kept caption column, and `source_index` (the row's
position in the source, files in sorted order). Rows without a URL, without the chosen caption,
or repeating a URL already taken are skipped and counted by reason. `_SOURCE.json`, written
last, marks the chunks complete, so a resumed stage never redoes (or half-reuses) them.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.config.download import CapsFusionSource
from pipelines.core import fs

SOURCE_MARKER = "_SOURCE.json"


@dataclass
class PreparedSource:
    """The chunk files img2dataset reads, and what happened to the source rows."""

    folder: str
    chunks: list[str]
    chunk_rows: list[int]
    kept_columns: list[str]
    rows_available: int
    rows_selected: int
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.chunk_rows)

    def shard_rows(self, per_shard: int) -> dict[int, int]:
        """Shard id → rows, numbered as img2dataset numbers them (consecutively across chunks)."""
        shards: dict[int, int] = {}
        for rows in self.chunk_rows:
            start = len(shards)
            for i in range(-(-rows // per_shard)):
                shards[start + i] = min(per_shard, rows - i * per_shard)
        return shards

    def summary(self) -> dict[str, Any]:
        return {
            "rows_available": self.rows_available,
            "rows_selected": self.rows_selected,
            "rows_kept": self.rows,
            "skipped": dict(sorted(self.skipped.items())),
            "chunks": len(self.chunks),
        }

    def to_json(self) -> dict[str, Any]:
        """Chunk names relative to the folder, so a moved workdir still resolves."""
        return {
            "chunks": [url.rsplit("/", 1)[-1] for url in self.chunks],
            "chunk_rows": self.chunk_rows,
            "kept_columns": self.kept_columns,
            "rows_available": self.rows_available,
            "rows_selected": self.rows_selected,
            "skipped": self.skipped,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], folder: str) -> PreparedSource:
        chunks = [fs.join(folder, name) for name in data.pop("chunks")]
        return cls(folder=folder, chunks=chunks, **data)


def select_rows(total: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted global indices of a seeded subset of `n` of `total` rows (all when n is None or ≥)."""
    if n is None or n >= total:
        return np.arange(total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=n, replace=False).astype(np.int64))


def list_parquet_files(url: str) -> list[str]:
    """The Parquet files behind `url` (file, folder, or glob), sorted, as full fsspec URLs."""
    filesystem, path = fs.filesystem(url)
    if any(ch in path for ch in "*?["):
        paths = sorted(filesystem.glob(path))
    elif filesystem.isdir(path):
        paths = sorted(p for p in filesystem.find(path) if p.endswith(".parquet"))
    elif filesystem.exists(path):
        paths = [path]
    else:
        raise FileNotFoundError(f"download.pretrain.url_list: '{url}' does not exist")
    if not paths:
        raise FileNotFoundError(f"download.pretrain.url_list: no *.parquet files at '{url}'")
    return [filesystem.unstrip_protocol(p) if "://" in url else p for p in paths]


def _open_parquet(url: str) -> pq.ParquetFile:
    filesystem, path = fs.filesystem(url)
    return pq.ParquetFile(filesystem.open(path, "rb"))


def _check_columns(url: str, schema: pa.Schema, wanted: list[str], field_name: str) -> None:
    missing = [c for c in wanted if c not in schema.names]
    if missing:
        raise ValueError(
            f"download.pretrain.{field_name}: column(s) {missing} not in {url} "
            f"(columns: {schema.names})"
        )


def read_subset(
    source: CapsFusionSource, samples: int | None, seed: int
) -> tuple[Iterator[pa.Table], int, int]:
    """(batches of the selected rows in source order, rows available, rows selected)."""
    files = list_parquet_files(source.url_list)
    handles = [_open_parquet(url) for url in files]
    for url, handle in zip(files, handles, strict=True):
        schema = handle.schema_arrow
        _check_columns(url, schema, [source.url_column], "url_column")
        _check_columns(url, schema, source.caption_columns, "caption_columns")
    total = sum(h.metadata.num_rows for h in handles)
    chosen = select_rows(total, samples, seed)
    columns = [source.url_column, *source.caption_columns]

    def batches() -> Iterator[pa.Table]:
        offset = 0
        for handle in handles:
            for group in range(handle.num_row_groups):
                rows = handle.metadata.row_group(group).num_rows
                lo, hi = np.searchsorted(chosen, [offset, offset + rows])
                if hi > lo:
                    local = chosen[lo:hi] - offset
                    table = handle.read_row_group(group, columns=columns).take(pa.array(local))
                    table = table.append_column(
                        "source_index", pa.array(chosen[lo:hi], type=pa.int64())
                    )
                    yield table
                offset += rows

    return batches(), total, len(chosen)


def normalise(
    batch: pa.Table,
    url_column: str,
    caption_column: str,
    caption_columns: list[str],
    seen_urls: set[str],
    skipped: Counter[str],
) -> pa.Table:
    """Standard columns (url, caption, kept captions, source_index); bad rows counted, dropped."""
    urls = batch.column(url_column).to_pylist()
    captions = batch.column(caption_column).to_pylist()
    keep: list[int] = []
    for i, (url, caption) in enumerate(zip(urls, captions, strict=True)):
        if not isinstance(url, str) or not url.strip():
            skipped["missing_url"] += 1
        elif not isinstance(caption, str) or not caption.strip():
            skipped["missing_caption"] += 1
        elif url.strip() in seen_urls:
            skipped["duplicate_url"] += 1
        else:
            seen_urls.add(url.strip())
            keep.append(i)
    taken = batch.take(pa.array(keep, type=pa.int64()))
    columns = {
        "url": pa.array([u.strip() for u in taken.column(url_column).to_pylist()], pa.string()),
        "caption": taken.column(caption_column).cast(pa.string()),
    }
    for name in caption_columns:
        columns[name] = taken.column(name).cast(pa.string())
    columns["source_index"] = taken.column("source_index").cast(pa.int64())
    return pa.table(columns)


def write_chunks(
    batches: Iterable[pa.Table], folder: str, chunk_rows: int
) -> list[tuple[str, int]]:
    """Re-batch into files of at most `chunk_rows` rows (atomic writes); [(url, rows)]."""
    written: list[tuple[str, int]] = []
    pending: list[pa.Table] = []
    pending_rows = 0

    def flush(tables: list[pa.Table]) -> None:
        table = pa.concat_tables(tables)
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        url = fs.join(folder, f"chunk-{len(written):05d}.parquet")
        fs.write_bytes_atomic(url, buffer.getvalue())
        written.append((url, table.num_rows))

    for batch in batches:
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= chunk_rows:
            merged = pa.concat_tables(pending)
            flush([merged.slice(0, chunk_rows)])
            rest = merged.slice(chunk_rows)
            pending, pending_rows = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
    if pending_rows:
        flush(pending)
    return written


def load_prepared(folder: str) -> PreparedSource | None:
    marker = fs.join(folder, SOURCE_MARKER)
    return PreparedSource.from_json(fs.read_json(marker), folder) if fs.exists(marker) else None


def prepare_from_batches(
    batches: Iterable[pa.Table],
    folder: str,
    rows_available: int,
    rows_selected: int,
    caption_column: str,
    caption_columns: list[str],
    chunk_rows: int,
    url_column: str = "url",
) -> PreparedSource:
    """Normalise, count skips, write chunks, then the marker (last)."""
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    cleaned = (
        normalise(b, url_column, caption_column, caption_columns, seen, skipped) for b in batches
    )
    written = write_chunks(cleaned, folder, chunk_rows)
    prepared = PreparedSource(
        folder=folder,
        chunks=[url for url, _ in written],
        chunk_rows=[rows for _, rows in written],
        kept_columns=list(caption_columns),
        rows_available=rows_available,
        rows_selected=rows_selected,
        skipped=dict(skipped),
    )
    if prepared.rows == 0:
        raise ValueError(
            f"download.pretrain: no usable rows ({rows_selected} selected of {rows_available}; "
            f"skipped: {dict(skipped)})"
        )
    fs.write_json_atomic(fs.join(folder, SOURCE_MARKER), prepared.to_json())
    return prepared


def prepare_capsfusion(
    source: CapsFusionSource, samples: int | None, seed: int, chunk_rows: int, folder: str
) -> PreparedSource:
    """Reuse finished chunks in `folder`, or read the subset and write them."""
    existing = load_prepared(folder)
    if existing is not None:
        return existing
    batches, total, selected = read_subset(source, samples, seed)
    return prepare_from_batches(
        batches,
        folder,
        total,
        selected,
        source.caption_column,
        source.caption_columns,
        chunk_rows,
        url_column=source.url_column,
    )


def read_chunks(prepared: PreparedSource) -> Iterator[pa.Table]:
    for url in prepared.chunks:
        filesystem, path = fs.filesystem(url)
        with filesystem.open(path, "rb") as handle:
            yield pq.read_table(handle)
