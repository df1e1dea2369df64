"""The feature Parquet schema: frozen vision features, one row per image, readable by anyone.

Columns
    key            string      sample key (img2dataset key, or image path relative to its folder)
    caption        string      the chosen caption ("" for SFT images)
    captions_json  string      every caption variant of the source row, as a JSON object
    features       fixed_size_list<float16>[L·d_v]   row-major [L, d_v] patch features
    num_tokens     int32       L   (explicit shape columns: plain pyarrow / pandas / DuckDB
    feature_dim    int32       d_v  readers need no Ray tensor extension to reshape)

Schema metadata (b"vlora.*"): schema version, shape, dtype, and the encoder config that made the
features (model, weights, feature layer, preprocessing), so a file can be checked against the
model that will consume it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlora.config import VisionEncoderConfig

SCHEMA_VERSION = "1"
META_VERSION = b"vlora.feature_schema"
META_SHAPE = b"vlora.feature_shape"
META_DTYPE = b"vlora.feature_dtype"
META_ENCODER = b"vlora.encoder"


class FeatureSchemaError(ValueError):
    """A feature file that does not follow the schema or does not match the expected encoder."""


def encoder_identity(config: VisionEncoderConfig) -> dict[str, Any]:
    """The encoder fields that change the features (used to check compatibility)."""
    return config.model_dump(mode="json")


def feature_schema(num_tokens: int, feature_dim: int, encoder: VisionEncoderConfig) -> pa.Schema:
    fields = [
        pa.field("key", pa.string(), nullable=False),
        pa.field("caption", pa.string()),
        pa.field("captions_json", pa.string()),
        pa.field("features", pa.list_(pa.float16(), num_tokens * feature_dim), nullable=False),
        pa.field("num_tokens", pa.int32(), nullable=False),
        pa.field("feature_dim", pa.int32(), nullable=False),
    ]
    metadata = {
        META_VERSION: SCHEMA_VERSION.encode(),
        META_SHAPE: json.dumps([num_tokens, feature_dim]).encode(),
        META_DTYPE: b"float16",
        META_ENCODER: json.dumps(encoder_identity(encoder), sort_keys=True).encode(),
    }
    return pa.schema(fields, metadata=metadata)


def features_to_table(
    keys: list[str],
    features: np.ndarray,
    encoder: VisionEncoderConfig,
    captions: list[str] | None = None,
    captions_json: list[str] | None = None,
) -> pa.Table:
    """features [n, L, d_v] (any float dtype; stored as float16) → a schema-conforming table."""
    if features.ndim != 3 or features.shape[0] != len(keys):
        raise FeatureSchemaError(f"features must be [n={len(keys)}, L, d_v], got {features.shape}")
    n, num_tokens, dim = features.shape
    flat = np.ascontiguousarray(features, dtype=np.float16).reshape(n * num_tokens * dim)
    values = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float16()), num_tokens * dim)
    schema = feature_schema(num_tokens, dim, encoder)
    columns = [
        pa.array(keys, type=pa.string()),
        pa.array(captions if captions is not None else [""] * n, type=pa.string()),
        pa.array(captions_json if captions_json is not None else ["{}"] * n, type=pa.string()),
        values,
        pa.array(np.full(n, num_tokens, dtype=np.int32)),
        pa.array(np.full(n, dim, dtype=np.int32)),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def table_features(table: pa.Table) -> np.ndarray:
    """The features column as a float16 array [n, L, d_v] (no copy for a single chunk)."""
    shape = json.loads(table.schema.metadata[META_SHAPE])
    column = table.column("features").combine_chunks()
    flat = column.values.to_numpy(zero_copy_only=False)
    return flat.reshape(len(table), *shape)


@dataclass(frozen=True)
class FeatureFileInfo:
    num_rows: int
    num_tokens: int
    feature_dim: int
    encoder: dict[str, Any]


def describe_schema(schema: pa.Schema) -> FeatureFileInfo:
    meta = schema.metadata or {}
    missing = [k.decode() for k in (META_VERSION, META_SHAPE, META_ENCODER) if k not in meta]
    if missing:
        raise FeatureSchemaError(f"not a VLoRA feature file: metadata {missing} missing")
    if meta[META_VERSION].decode() != SCHEMA_VERSION:
        raise FeatureSchemaError(f"feature schema v{meta[META_VERSION].decode()} is not supported")
    num_tokens, dim = json.loads(meta[META_SHAPE])
    expected = feature_schema(
        num_tokens, dim, VisionEncoderConfig.model_validate(json.loads(meta[META_ENCODER]))
    )
    for field in expected:
        if field.name not in schema.names or schema.field(field.name).type != field.type:
            raise FeatureSchemaError(f"column '{field.name}' missing or not {field.type}")
    return FeatureFileInfo(0, num_tokens, dim, json.loads(meta[META_ENCODER]))


def validate_feature_file(
    source: str | BinaryIO, expected_encoder: VisionEncoderConfig | None = None
) -> FeatureFileInfo:
    """Check schema, metadata and row count without reading the feature values."""
    try:
        parquet = pq.ParquetFile(source)
    except (OSError, pa.ArrowInvalid) as err:
        raise FeatureSchemaError(f"unreadable Parquet file: {err}") from None
    info = describe_schema(parquet.schema_arrow)
    if expected_encoder is not None and info.encoder != encoder_identity(expected_encoder):
        raise FeatureSchemaError(
            "features were made by a different encoder config than the model's vision config"
        )
    return FeatureFileInfo(
        parquet.metadata.num_rows, info.num_tokens, info.feature_dim, info.encoder
    )


def write_feature_table(table: pa.Table, sink: str | BinaryIO) -> None:
    # Row groups of ~64 images keep random access cheap and memory bounded for large L·d_v.
    # Dictionary encoding never pays off for float features and slows reads down (1.7× here).
    pq.write_table(
        table, sink, row_group_size=64, compression="zstd", use_dictionary=["key", "caption"]
    )
