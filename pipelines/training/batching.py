"""Streaming micro batches for a training worker: modality grouping, resume, rank agreement.

- Modality grouping (LLaVA's group_by_modality): rows go to an image buffer or a text buffer;
  every micro batch is all-image or all-text (no padding of text-only rows to the baseline's
  L + T length, no zero deltas in VLoRA batches).
- The modality of each step is drawn from one seeded schedule shared by all ranks (P(image) =
  the share of image rows), so every rank runs the same kind of step: a text-only step leaves
  the generator without gradients, and ranks disagreeing on that would desynchronise the
  gradient all-reduce.
- Resume: the order is a pure function of (dataset, epoch seed), so a restarted worker replays
  the epoch's stream and skips the micro batches it already trained on (reading, no compute).
- Rank agreement: before each micro batch the ranks agree (all-reduce MIN) that all of them
  have one of the scheduled kind, else of the other kind; the epoch ends for everyone when
  neither is available everywhere.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

NumpyBatch = dict[str, np.ndarray]
MODALITIES = ("image", "text")


@dataclass
class EpochCounters:
    rows_seen: int = 0
    rows_left_over: int = 0  # still buffered when the epoch ended (a drop_last)
    batches: dict[str, int] = field(default_factory=lambda: {"image": 0, "text": 0})


def _take(rows: list[tuple[NumpyBatch, int]]) -> NumpyBatch:
    out: NumpyBatch = {}
    for column in rows[0][0]:
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


class ModalityBuffers:
    """Pulls rows from a stream of chunks into per-modality buffers, on demand."""

    def __init__(self, chunks: Iterable[NumpyBatch], batch_size: int, counters: EpochCounters):
        self.chunks = iter(chunks)
        self.batch_size = batch_size
        self.counters = counters
        self.buffers: dict[str, list[tuple[NumpyBatch, int]]] = {m: [] for m in MODALITIES}
        self.exhausted = False
        self._taken: list[tuple[NumpyBatch, int]] = []

    def _pull(self) -> bool:
        chunk = next(self.chunks, None)
        if chunk is None:
            self.exhausted = True
            return False
        for i, flag in enumerate(np.asarray(chunk["has_image"]).astype(bool)):
            self.counters.rows_seen += 1
            self.buffers["image" if flag else "text"].append((chunk, i))
        return True

    def can_fill(self, modality: str) -> bool:
        buffer = self.buffers[modality]
        while len(buffer) < self.batch_size and not self.exhausted:
            self._pull()
        return len(buffer) >= self.batch_size

    def next_batch(self, modality: str) -> NumpyBatch | None:
        if not self.can_fill(modality):
            return None
        buffer = self.buffers[modality]
        self._taken = buffer[: self.batch_size]
        batch = _take(self._taken)
        del buffer[: self.batch_size]
        self.counters.batches[modality] += 1
        return batch

    def put_back(self, modality: str, batch: NumpyBatch) -> None:
        """Undo the last `next_batch` (the ranks chose another modality for this step)."""
        self.buffers[modality][:0] = self._taken
        self.counters.batches[modality] -= 1

    def left_over(self) -> int:
        return sum(len(b) for b in self.buffers.values())


def modality_schedule(image_fraction: float, seed: int) -> Iterator[str]:
    """The same endless sequence of step modalities on every rank."""
    rng = random.Random(seed)
    while True:
        if image_fraction >= 1.0:
            yield "image"
        elif image_fraction <= 0.0:
            yield "text"
        else:
            yield "image" if rng.random() < image_fraction else "text"


def all_ranks_have_batch(have: bool, device: torch.device) -> bool:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return have
    flag = torch.tensor([1 if have else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def epoch_micro_batches(
    chunks: Iterable[NumpyBatch],
    batch_size: int,
    image_fraction: float,
    seed: int,
    device: torch.device,
    counters: EpochCounters | None = None,
) -> Iterator[NumpyBatch]:
    """Micro batches of one epoch, the same modality on every rank at every step.

    When a rank cannot fill the scheduled modality, all ranks take the other one if every rank
    can; the epoch ends when neither works everywhere.
    """
    counters = counters or EpochCounters()
    buffers = ModalityBuffers(chunks, batch_size, counters)
    for scheduled in modality_schedule(image_fraction, seed):
        batch = buffers.next_batch(scheduled) if buffers.can_fill(scheduled) else None
        if not all_ranks_have_batch(batch is not None, device):
            other = "text" if scheduled == "image" else "image"
            if batch is not None:  # this rank could; put the batch back for later
                buffers.put_back(scheduled, batch)
            batch = buffers.next_batch(other) if buffers.can_fill(other) else None
            if not all_ranks_have_batch(batch is not None, device):
                if batch is not None:
                    buffers.put_back(other, batch)
                counters.rows_left_over = buffers.left_over()
                return
        assert batch is not None
        yield batch
