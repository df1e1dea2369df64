"""VLoRA's per-request deltas in a running batch: W_v rows aligned with the KV cache's rows.

For every delta wrapper of the LLM (type t, inserted block j) a slab `[slots, in, r]` holds the
W_v of the request in each row; text-only rows hold zeros, so their ΔW is exactly 0. Before a
forward, each wrapper gets `set_delta(slab[:B], W_s[t], j)` (a view: no copy per step), through
the wrappers' own API (`vlora.delta.layers.LowRankDelta.set_delta`), and a batch with no image
at all runs with the deltas cleared (no low-rank branch at all).

A lone request with an image may instead run merged (`merge`): q, k, v, o (and per-matrix MLP)
deltas added into the weights, the parallel "m" branch kept with its one row, as
`VLoRAModel.merge` does. `unmerge` restores the weights bit for bit; the request's KV cache stays
valid, so it continues factorised among new arrivals.
"""

from __future__ import annotations

import torch

from vlora.delta.layers import DeltaLinear, LowRankDelta
from vlora.model import VLoRAModel
from vlora.serving.conditioning import Conditioning


class DeltaSlots:
    def __init__(self, model: VLoRAModel, max_slots: int) -> None:
        self.model = model
        param = next(model.llm.parameters())
        # (wrapper, W_s parameter [k, r, out], block index j, slab [slots, in, r])
        self.entries: list[tuple[LowRankDelta, torch.Tensor, int, str, torch.Tensor]] = []
        for delta_type in model.plan.types:
            w_s = model.generator.w_s[delta_type.name]  # [k, r, out]
            rank = w_s.shape[1]
            for j, wrapper in enumerate(model.deltas[delta_type.name]):
                slab = torch.zeros(
                    max_slots, wrapper.in_features, rank, dtype=param.dtype, device=param.device
                )
                self.entries.append((wrapper, w_s, j, delta_type.name, slab))
        self.has_image = [False] * max_slots
        self.merged = False

    # ----- rows ------------------------------------------------------------------------------
    def write(self, slot: int, conditioning: Conditioning | None) -> None:
        for _, _, j, name, slab in self.entries:
            if conditioning is None:
                slab[slot].zero_()
            else:
                slab[slot].copy_(conditioning.tensors[name][j])  # W_v [in, r], any device/dtype
        self.has_image[slot] = conditioning is not None

    def move(self, src: int, dst: int) -> None:
        for *_, slab in self.entries:
            slab[dst].copy_(slab[src])
        self.has_image[dst] = self.has_image[src]
        self.has_image[src] = False

    def any_image(self, start: int, stop: int) -> bool:
        return any(self.has_image[start:stop])

    # ----- before a forward --------------------------------------------------------------------
    def set_rows(self, start: int, stop: int) -> str:
        """Deltas of rows start..stop-1 (the batch of the next forward) on every wrapper;
        returns the path taken: "factorised", "merged" or "none" (no image in the batch)."""
        if self.merged:
            if (start, stop) != (0, 1):
                raise RuntimeError("the weights hold one request's image; unmerge first")
            return "merged"
        if not self.any_image(start, stop):
            self.clear()
            return "none"
        for wrapper, w_s, j, _, slab in self.entries:
            wrapper.set_delta(slab[start:stop], w_s, j)  # a view [B, in, r]: no copy
        return "factorised"

    def clear(self) -> None:
        for wrapper, *_ in self.entries:
            wrapper.clear_delta()

    # ----- one image in the weights ----------------------------------------------------------
    @torch.no_grad()
    def merge(self, slot: int) -> None:
        """Bake row `slot`'s deltas into the weights (the batch must be that one request)."""
        if self.merged:
            return
        for wrapper, w_s, j, _, slab in self.entries:
            wrapper.set_delta(slab[slot : slot + 1], w_s, j)
            if isinstance(wrapper, DeltaLinear):
                wrapper.merge()
                wrapper.clear_delta()
            # a parallel branch has no weight to merge into: it keeps its single row
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        for wrapper, *_ in self.entries:
            if isinstance(wrapper, DeltaLinear):
                wrapper.unmerge()
            wrapper.clear_delta()
        self.merged = False
