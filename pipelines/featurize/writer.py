"""Streaming, atomic Parquet output of one work unit.

Rows are appended in batches to a temporary file next to the final name; `close()` records the
skipped inputs in the file's metadata and renames it into place, so the final name only ever
holds a complete, valid file. Nothing is kept in memory beyond one batch.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import fs
from vlora.config import VisionEncoderConfig
from vlora.data.features import feature_schema, features_to_table

META_SKIPPED = b"vlora.skipped"


class UnitWriter:
    def __init__(self, final_url: str, encoder: VisionEncoderConfig) -> None:
        self.final_url = final_url
        self.encoder = encoder
        self.tmp_url = f"{final_url}.tmp-{uuid.uuid4().hex[:8]}"
        self.filesystem, self.tmp_path = fs.filesystem(self.tmp_url)
        self.filesystem.makedirs(os.path.dirname(self.tmp_path), exist_ok=True)
        self.rows = 0
        self.skipped: list[dict[str, str]] = []
        self._chunks: list[pa.Table] = []
        self._handle = self.filesystem.open(self.tmp_path, "wb")
        schema = feature_schema(encoder.num_patches, encoder.feature_dim, encoder)
        self._writer = pq.ParquetWriter(
            self._handle, schema, compression="zstd", use_dictionary=["key", "caption"]
        )

    def write(
        self, keys: list[str], features: np.ndarray, captions: list[str], captions_json: list[str]
    ) -> None:
        if not keys:
            return
        table = features_to_table(keys, features, self.encoder, captions, captions_json)
        self._writer.write_table(table, row_group_size=64)
        self.rows += len(keys)

    def skip(self, key: str, reason: str, detail: str) -> None:
        self.skipped.append({"key": key, "reason": reason, "detail": detail[:200]})

    def close(self) -> dict[str, Any]:
        self._writer.add_key_value_metadata({META_SKIPPED: json.dumps(self.skipped)})
        self._writer.close()
        self._handle.close()
        final_fs, final_path = fs.filesystem(self.final_url)
        final_fs.mv(self.tmp_path, final_path)  # a rename on local disks, a copy+delete on S3
        return {"rows": self.rows, "skipped": self.skipped}

    def abort(self) -> None:
        try:
            self._writer.close()
            self._handle.close()
        finally:
            if self.filesystem.exists(self.tmp_path):
                self.filesystem.rm(self.tmp_path)


def finished_unit(url: str, encoder: VisionEncoderConfig) -> dict[str, Any] | None:
    """The summary of a finished output, or None if missing / invalid (then it is redone)."""
    from vlora.data.features import FeatureSchemaError, validate_feature_file

    filesystem, path = fs.filesystem(url)
    if not filesystem.exists(path):
        return None
    try:
        with filesystem.open(path, "rb") as handle:
            info = validate_feature_file(handle, expected_encoder=encoder)
            handle.seek(0)
            metadata = pq.ParquetFile(handle).schema_arrow.metadata or {}
    except FeatureSchemaError:
        return None
    skipped = json.loads(metadata.get(META_SKIPPED, b"[]"))
    return {"rows": info.num_rows, "skipped": skipped}
