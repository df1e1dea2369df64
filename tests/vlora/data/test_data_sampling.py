"""ModalityGroupedBatchSampler: single-modality batches, full coverage, seeded, resumable,
replicas agree on the modality of a step, length grouping reduces padding."""

from __future__ import annotations

import numpy as np
import pytest

from vlora.data.sampling import ModalityGroupedBatchSampler

N = 103
HAS_IMAGE = [i % 5 != 0 for i in range(N)]  # 20 text-only, 83 image samples
LENGTHS = [int(x) for x in np.random.default_rng(0).integers(5, 300, N)]


def test_batches_are_single_modality_and_cover_every_sample_once() -> None:
    sampler = ModalityGroupedBatchSampler(HAS_IMAGE, 8, LENGTHS, seed=3)
    batches = list(sampler)
    for batch in batches:
        assert len({HAS_IMAGE[i] for i in batch}) == 1
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(N))
    assert len(batches) == len(sampler) == 11 + 3  # ceil(83/8) + ceil(20/8)
    kinds = [HAS_IMAGE[b[0]] for b in batches]
    assert kinds != sorted(kinds) and kinds != sorted(kinds, reverse=True)  # modalities mixed


def test_drop_last_drops_only_incomplete_batches() -> None:
    batches = list(ModalityGroupedBatchSampler(HAS_IMAGE, 8, seed=0, drop_last=True))
    assert all(len(b) == 8 for b in batches) and len(batches) == 10 + 2


def test_order_is_a_function_of_seed_and_epoch() -> None:
    a = ModalityGroupedBatchSampler(HAS_IMAGE, 8, LENGTHS, seed=1)
    b = ModalityGroupedBatchSampler(HAS_IMAGE, 8, LENGTHS, seed=1)
    assert list(a) == list(b)
    a.set_epoch(1)
    b.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 == list(b)
    assert epoch1 != ModalityGroupedBatchSampler(HAS_IMAGE, 8, LENGTHS, seed=1).epoch_batches(0)
    assert ModalityGroupedBatchSampler(HAS_IMAGE, 8, LENGTHS, seed=2).epoch_batches(1) != epoch1


def test_resume_continues_with_the_next_batch() -> None:
    sampler = ModalityGroupedBatchSampler(HAS_IMAGE, 8, LENGTHS, seed=5)
    sampler.set_epoch(2)
    full = sampler.epoch_batches()
    iterator = iter(sampler)
    seen = [next(iterator) for _ in range(4)]
    state = sampler.state_dict()
    assert state == {"epoch": 2, "position": 4, "seed": 5}
    restarted = ModalityGroupedBatchSampler(HAS_IMAGE, 8, LENGTHS, seed=5)
    restarted.load_state_dict(state)
    assert seen + list(restarted) == full
    # A DataLoader prefetching ahead: the loop says what it consumed.
    assert sampler.state_dict(consumed=3)["position"] == 3
    with pytest.raises(ValueError, match="seed"):
        ModalityGroupedBatchSampler(HAS_IMAGE, 8, seed=6).load_state_dict(state)


def test_replicas_share_the_modality_of_each_step_and_split_the_data() -> None:
    replicas = [
        ModalityGroupedBatchSampler(HAS_IMAGE, 4, LENGTHS, seed=0, num_replicas=3, rank=r)
        for r in range(3)
    ]
    per_rank = [list(s) for s in replicas]
    assert len({len(b) for b in per_rank}) == 1  # same number of steps on every rank
    for step in zip(*per_rank, strict=True):
        assert len({HAS_IMAGE[i] for batch in step for i in batch}) == 1
    flat = [i for batches in per_rank for b in batches for i in b]
    assert len(flat) == len(set(flat)) == N  # disjoint; here nothing is left over


def test_length_grouping_reduces_padding() -> None:
    def padding(sampler: ModalityGroupedBatchSampler) -> int:
        return sum(
            max(LENGTHS[i] for i in b) * len(b) - sum(LENGTHS[i] for i in b) for b in sampler
        )

    grouped = padding(ModalityGroupedBatchSampler(HAS_IMAGE, 8, LENGTHS, seed=0))
    plain = padding(ModalityGroupedBatchSampler(HAS_IMAGE, 8, None, seed=0))
    assert grouped < 0.5 * plain
