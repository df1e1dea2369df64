"""Streaming micro batches for a training worker: modality grouping, resume, rank agreement.

- Modality grouping (LLaVA's group_by_modality): rows are routed to an image buffer or a text
  buffer and a micro batch is emitted when one fills, so every batch is all-image or all-text
  (no padding of text-only rows to the baseline's L + T length, no zero deltas in VLoRA batches).
  Incomplete buffers at the end of an epoch are dropped (and counted), like drop_last.
- Resume: the order is a pure function of (dataset, epoch seed), so a restarted worker replays
  the epoch's stream and skips the micro batches it already trained on (reading, no compute).
- Rank agreement: every rank must take the same number of steps or the collectives hang; before
  each micro batch the ranks agree (all-reduce MIN) that all of them still have one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

NumpyBatch = dict[str, np.ndarray]


@dataclass
class EpochCounters:
    rows_seen: int = 0
    rows_dropped: int = 0  # left in incomplete buffers at epoch end
    batches: dict[str, int] = field(default_factory=lambda: {"image": 0, "text": 0})


def _take(rows: list[tuple[NumpyBatch, int]]) -> NumpyBatch:
    columns = rows[0][0].keys()
    out: NumpyBatch = {}
    for column in columns:
        values = [chunk[column][i] for chunk, i in rows]
        first = values[0]
        if isinstance(first, np.ndarray) and all(
            isinstance(v, np.ndarray) and v.shape == first.shape for v in values
        ):
            out[column] = np.stack(values)
        else:  # ragged lists (token ids) stay an object array; collate pads them
            array = np.empty(len(values), dtype=object)
            array[:] = values
            out[column] = array
    return out


def grouped_micro_batches(
    chunks: Iterable[NumpyBatch],
    batch_size: int,
    group_by_modality: bool,
    counters: EpochCounters | None = None,
) -> Iterator[NumpyBatch]:
    counters = counters or EpochCounters()
    buffers: dict[str, list[tuple[NumpyBatch, int]]] = {"image": [], "text": []}
    for chunk in chunks:
        has_image = np.asarray(chunk["has_image"]).astype(bool)
        for i, flag in enumerate(has_image):
            counters.rows_seen += 1
            name = "image" if (flag or not group_by_modality) else "text"
            buffers[name].append((chunk, i))
            if len(buffers[name]) == batch_size:
                counters.batches[name] += 1
                yield _take(buffers[name])
                buffers[name] = []
    counters.rows_dropped += sum(len(b) for b in buffers.values())


def all_ranks_have_batch(have: bool, device: torch.device) -> bool:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return have
    flag = torch.tensor([1 if have else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def synchronized(batches: Iterator[NumpyBatch], device: torch.device) -> Iterator[NumpyBatch]:
    """Yield while every rank still has a batch; stop together otherwise."""
    while True:
        batch = next(batches, None)
        if not all_ranks_have_batch(batch is not None, device):
            return
        assert batch is not None
        yield batch
