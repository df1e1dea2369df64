"""Finding and reading feature rows by key without loading the features.

`FeatureIndex` reads, for every feature Parquet file, only its footer and its `key` column, and
maps each key to a global row number. Reading rows back groups them by file and Parquet row
group (the writer uses 64 rows per group), so a batch of rows sorted by (file, row) costs about
one row-group read per 64 rows; a small cache of decoded row groups serves random access by
key (one row at a time, e.g. `benchmarks/data_sft.py`'s random-key reads).

Memory: about 140 bytes per key (620K LLaVA-style paths: 85 MB, measured), never the 1.2 MB
per image of the features themselves.
"""

from __future__ import annotations

import bisect
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import BinaryIO

import numpy as np
import pyarrow.parquet as pq

from vlora.config import VisionEncoderConfig
from vlora.data.features import FeatureSchemaError, describe_schema, encoder_identity

Opener = Callable[[str], BinaryIO]
MAX_OPEN_FILES = 16


def open_local(path: str) -> BinaryIO:
    return open(path, "rb")


def check_feature_file(
    parquet: pq.ParquetFile,
    path: str,
    expected_encoder: VisionEncoderConfig | None = None,
    expected_shape: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """Check a feature file's schema (and encoder / shape when given); returns (L, d_v)."""
    try:
        info = describe_schema(parquet.schema_arrow)
    except FeatureSchemaError as err:
        raise FeatureSchemaError(f"{path}: {err}") from None
    if expected_encoder is not None and info.encoder != encoder_identity(expected_encoder):
        raise FeatureSchemaError(
            f"{path}: features were made by a different encoder config than the model's "
            "vision config (model.vision)"
        )
    shape = (info.num_tokens, info.feature_dim)
    if expected_shape is not None and shape != tuple(expected_shape):
        raise FeatureSchemaError(
            f"{path}: features are {list(shape)}, the model expects {list(expected_shape)}"
        )
    return shape


def row_group_starts(parquet: pq.ParquetFile) -> list[int]:
    """First row of each row group, plus the total row count at the end."""
    starts = [0]
    for i in range(parquet.metadata.num_row_groups):
        starts.append(starts[-1] + parquet.metadata.row_group(i).num_rows)
    return starts


def read_rows(parquet: pq.ParquetFile, rows: Sequence[int]) -> np.ndarray:
    """Features of `rows` (positions in the file), in that order: float16 [n, L·d_v].

    Only the row groups that hold them are read, each once.
    """
    starts = row_group_starts(parquet)
    groups = sorted({bisect.bisect_right(starts, r) - 1 for r in rows})
    table = parquet.read_row_groups(groups, columns=["features"])
    column = table.column("features").combine_chunks()
    flat = column.values.to_numpy(zero_copy_only=False).reshape(len(table), column.type.list_size)
    # Row r sits at (its offset inside its group) + (rows of the groups read before it).
    before = {}
    offset = 0
    for group in groups:
        before[group] = offset
        offset += starts[group + 1] - starts[group]
    picks = []
    for r in rows:
        group = bisect.bisect_right(starts, r) - 1
        picks.append(before[group] + r - starts[group])
    return flat[np.asarray(picks, dtype=np.int64)]


class FeatureIndex:
    """key → (file, row) over feature Parquet files; `read(keys)` returns their features."""

    def __init__(
        self,
        files: Sequence[str],
        opener: Opener = open_local,
        expected_encoder: VisionEncoderConfig | None = None,
        expected_shape: tuple[int, int] | None = None,
        cache_row_groups: int = 4,
    ) -> None:
        self.files = list(files)
        self.opener = opener
        self._rows: dict[str, int] = {}
        self._file_starts = [0]
        self.duplicate_keys: list[str] = []
        self.shape: tuple[int, int] | None = None
        self._open: OrderedDict[int, pq.ParquetFile] = OrderedDict()  # bounded: file handles
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_size = cache_row_groups
        self._pid = os.getpid()
        for path in self.files:
            with opener(path) as handle:
                try:
                    parquet = pq.ParquetFile(handle)
                except (OSError, ValueError) as err:
                    raise FeatureSchemaError(f"{path}: unreadable Parquet file: {err}") from None
                shape = check_feature_file(parquet, path, expected_encoder, expected_shape)
                keys = parquet.read(columns=["key"]).column("key").to_pylist()
            if self.shape is not None and shape != self.shape:
                raise FeatureSchemaError(
                    f"{path}: features are {list(shape)} but {self.files[0]} has {list(self.shape)}"
                )
            self.shape = shape
            base = self._file_starts[-1]
            for row, key in enumerate(keys):
                if key in self._rows:
                    self.duplicate_keys.append(key)  # the first file's row wins
                else:
                    self._rows[key] = base + row
            self._file_starts.append(base + len(keys))

    def __getstate__(self) -> dict:
        # Open files and decoded row groups stay behind (DataLoader workers reopen lazily).
        state = dict(self.__dict__)
        state["_open"], state["_cache"] = OrderedDict(), OrderedDict()
        return state

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def keys(self) -> list[str]:
        return list(self._rows)

    def locate(self, key: str) -> tuple[int, int]:
        """(file index, row within that file); KeyError for an unknown key."""
        global_row = self._rows[key]
        file_index = bisect.bisect_right(self._file_starts, global_row) - 1
        return file_index, global_row - self._file_starts[file_index]

    def _parquet(self, file_index: int) -> pq.ParquetFile:
        if self._pid != os.getpid():
            # A forked DataLoader worker must not share file offsets with its parent.
            self._open.clear()
            self._cache.clear()
            self._pid = os.getpid()
        if file_index not in self._open:
            self._open[file_index] = pq.ParquetFile(self.opener(self.files[file_index]))
            if len(self._open) > MAX_OPEN_FILES:
                self._open.popitem(last=False)
        self._open.move_to_end(file_index)
        return self._open[file_index]

    def read(self, keys: Sequence[str]) -> np.ndarray:
        """float16 [n, L·d_v] for `keys`, reading each needed row group once."""
        if self.shape is None:
            raise KeyError("the feature index is empty")
        out = np.empty((len(keys), self.shape[0] * self.shape[1]), dtype=np.float16)
        by_file: dict[int, list[tuple[int, int]]] = {}
        for i, key in enumerate(keys):
            file_index, row = self.locate(key)
            by_file.setdefault(file_index, []).append((i, row))
        for file_index, items in by_file.items():
            if len(items) == 1:
                ((i, row),) = items
                out[i] = self._cached_row(file_index, row)
            else:
                out[[i for i, _ in items]] = read_rows(
                    self._parquet(file_index), [row for _, row in items]
                )
        return out

    def _cached_row(self, file_index: int, row: int) -> np.ndarray:
        """One row through an LRU cache of row groups (random access by key)."""
        parquet = self._parquet(file_index)
        starts = row_group_starts(parquet)
        group = bisect.bisect_right(starts, row) - 1
        cache_key = (file_index, group)
        if cache_key not in self._cache:
            self._cache[cache_key] = read_rows(parquet, range(starts[group], starts[group + 1]))
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(cache_key)
        return self._cache[cache_key][row - starts[group]]
