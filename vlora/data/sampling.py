"""Modality-grouped, length-bucketed, seeded and resumable batches for plain torch training.

As LLaVA's `group_by_modality_length`: every batch is all-image or all-text, so VLoRA never runs
the generator for a batch of zero deltas and the baseline never pads text-only rows to L + T.
With several replicas (DDP), the replicas' batches of one step come from one modality, so the
generator is used by all ranks or by none in that step (no unused-parameter mismatch).

Order of an epoch, a pure function of (seed, epoch):
1. each modality's indices are shuffled;
2. with `lengths`, they are cut into groups of `length_group` steps and sorted by length inside
   each group (similar lengths share a batch: less padding, yet the order stays random);
3. each modality is cut into steps of `batch_size × num_replicas` rows (an incomplete last step
   is kept, split as evenly as possible, unless `drop_last`);
4. the steps of both modalities are shuffled together; replica r takes batch r of every step.

Resume: `state_dict()` is {"epoch", "position"} (batches this replica has consumed in the
epoch); after `load_state_dict`, iteration continues with the next batch of the same order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class ModalityGroupedBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        has_image: Sequence[bool],
        batch_size: int,
        lengths: Sequence[int] | None = None,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
        length_group: int = 8,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        if lengths is not None and len(lengths) != len(has_image):
            raise ValueError(f"{len(lengths)} lengths for {len(has_image)} samples")
        self.has_image = np.asarray(has_image, dtype=bool)
        self.lengths = np.asarray(lengths, dtype=np.int64) if lengths is not None else None
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.length_group = max(1, length_group)
        self.epoch = 0
        self.position = 0

    # ----- order ----------------------------------------------------------------------------
    def _steps(self, indices: np.ndarray, rng: np.random.Generator) -> list[list[np.ndarray]]:
        step_rows = self.batch_size * self.num_replicas
        order = indices[rng.permutation(len(indices))]
        if self.lengths is not None:
            group = step_rows * self.length_group
            order = (
                np.concatenate(
                    [
                        chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                        for chunk in np.array_split(order, max(1, -(-len(order) // group)))
                    ]
                )
                if len(order)
                else order
            )
        steps = []
        for start in range(0, len(order), step_rows):
            rows = order[start : start + step_rows]
            if len(rows) < step_rows and (self.drop_last or len(rows) < self.num_replicas):
                continue  # every replica needs at least one row in a step
            steps.append(np.array_split(rows, self.num_replicas))
        return steps

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        """This replica's batches of an epoch, in order."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch])
        image_steps = self._steps(np.flatnonzero(self.has_image), rng)
        text_steps = self._steps(np.flatnonzero(~self.has_image), rng)
        steps = image_steps + text_steps
        return [steps[i][self.rank].tolist() for i in rng.permutation(len(steps))]

    # ----- iteration and resume -------------------------------------------------------------
    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches()
        while self.position < len(batches):
            batch = batches[self.position]
            self.position += 1
            yield batch

    def __len__(self) -> int:
        return len(self.epoch_batches())

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its first batch (call before each epoch, as with DistributedSampler)."""
        self.epoch = epoch
        self.position = 0

    def state_dict(self, consumed: int | None = None) -> dict[str, int]:
        """{"epoch", "position", "seed"}; pass `consumed` when a DataLoader prefetches ahead of
        what the training loop has actually used."""
        position = self.position if consumed is None else consumed
        return {"epoch": self.epoch, "position": position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"sampler state has seed {state['seed']}, this sampler {self.seed}")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
