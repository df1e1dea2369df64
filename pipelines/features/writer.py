"""Streaming, atomic Parquet output of one work unit, and reading a finished one back.

Rows are appended in row groups of `ROW_GROUP_ROWS` images (what `vlora.data.features` and its
FeatureIndex expect) to a temporary file next to the final name (`{name}.parquet.tmp-{id}`, which
no `*.parquet` glob matches). `close()` records the skipped inputs and the compute dtype in the
file's metadata and renames it into place, so the final name only ever holds a complete, valid
file. Memory: one row group plus one encoder batch.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from pipelines.core import fs
from vlora.config import VisionEncoderConfig
from vlora.data.features import (
    FeatureSchemaError,
    feature_schema,
    features_to_table,
    validate_feature_file,
)

ROW_GROUP_ROWS = 64
META_SKIPPED = b"vlora.skipped"
META_COMPUTE_DTYPE = b"vlora.compute_dtype"
TMP_MARK = ".tmp-"


class UnitWriter:
    def __init__(self, final_url: str, encoder: VisionEncoderConfig, compute_dtype: str) -> None:
        self.final_url = final_url
        self.encoder = encoder
        self.compute_dtype = compute_dtype
        self.filesystem, self.final_path = fs.filesystem(final_url)
        self.tmp_path = f"{self.final_path}{TMP_MARK}{uuid.uuid4().hex[:8]}"
        self.local = isinstance(self.filesystem, LocalFileSystem)
        parent = os.path.dirname(self.tmp_path) if self.local else posixpath.dirname(self.tmp_path)
        self.filesystem.makedirs(parent, exist_ok=True)
        self.rows = 0
        self.skipped: list[dict[str, str]] = []
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._handle = self.filesystem.open(self.tmp_path, "wb")
        schema = feature_schema(encoder.num_patches, encoder.feature_dim, encoder)
        self._writer = pq.ParquetWriter(
            self._handle, schema, compression="zstd", use_dictionary=["key", "caption"]
        )

    def write(
        self, keys: list[str], features: np.ndarray, captions: list[str], captions_json: list[str]
    ) -> None:
        """Append rows: features [n, L, d_v] (any float dtype; stored as fp16)."""
        if not keys:
            return
        self._pending.append(
            features_to_table(keys, features, self.encoder, captions, captions_json)
        )
        self._pending_rows += len(keys)
        self.rows += len(keys)
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        full = len(table) if final else len(table) - len(table) % ROW_GROUP_ROWS
        if full:
            self._writer.write_table(table.slice(0, full), row_group_size=ROW_GROUP_ROWS)
        rest = table.slice(full)
        self._pending = [rest] if len(rest) else []
        self._pending_rows = len(rest)

    def skip(self, key: str, reason: str, detail: str) -> None:
        self.skipped.append({"key": key, "reason": reason, "detail": detail[:200]})

    def close(self) -> dict[str, Any]:
        self._flush(final=True)
        self._writer.add_key_value_metadata(
            {META_SKIPPED: json.dumps(self.skipped), META_COMPUTE_DTYPE: self.compute_dtype}
        )
        self._writer.close()
        if self.local:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        self._handle.close()
        if self.local:
            os.replace(self.tmp_path, self.final_path)  # atomic on one filesystem
        else:  # object stores: a server-side copy, then the temporary object is deleted
            self.filesystem.mv(self.tmp_path, self.final_path)
        return {"rows": self.rows, "skipped": self.skipped}

    def abort(self) -> None:
        try:
            self._writer.close()
            self._handle.close()
        finally:
            if self.filesystem.exists(self.tmp_path):
                self.filesystem.rm(self.tmp_path)


def finished_unit(url: str, encoder: VisionEncoderConfig) -> dict[str, Any] | None:
    """rows/skipped of a finished output, or None when missing or invalid (it is then redone).

    Valid = the feature schema, made by `encoder`'s exact config, with our skip record.
    """
    filesystem, path = fs.filesystem(url)
    if not filesystem.exists(path):
        return None
    try:
        with filesystem.open(path, "rb") as handle:
            info = validate_feature_file(handle, expected_encoder=encoder)
            handle.seek(0)
            metadata = pq.ParquetFile(handle).metadata.metadata or {}  # file key-value metadata
        if META_SKIPPED not in metadata:
            raise FeatureSchemaError("no skipped-inputs record: not written by this stage")
        skipped = json.loads(metadata[META_SKIPPED])
    except (FeatureSchemaError, OSError, ValueError) as err:
        print(f"[features] {url}: invalid, will be recomputed ({err})", flush=True)
        return None
    return {"rows": info.num_rows, "skipped": skipped}


def stale_temp_files(folder: str) -> list[str]:
    """Temporary outputs left by killed runs (never read; removed once the stage finishes)."""
    filesystem, path = fs.filesystem(folder)
    if not filesystem.exists(path):
        return []
    return sorted(p for p in filesystem.ls(path, detail=False) if TMP_MARK in posixpath.basename(p))
