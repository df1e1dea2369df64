"""Wrappers that add a per-sample low-rank delta to an unmodified module.

For sample b with generated factor W_v[b] ∈ R^{in×r} and learned W_s ∈ R^{r×out}:

    y_b = base(x_b) + s · (x_b · W_v[b]) · W_s        (factorised: two batched matmuls)

which equals x_b · (W + s · W_v[b] · W_s) for a linear layer, so for one image the delta can be
merged into the weight instead (`DeltaLinear.merge`). An h×h matrix is never built per sample.

The factors are set on the wrapper before the LLM's forward (`set_delta`) and stay set until the
next call, on purpose: activation checkpointing recomputes the block during backward and must
see the same factors. Text-only samples carry W_v[b] = 0, hence ΔW = 0.
"""

from __future__ import annotations

import torch
from torch import nn


class LowRankDelta(nn.Module):
    """Common state of the delta wrappers: the wrapped module and the current factors."""

    def __init__(self, base_layer: nn.Module, in_features: int, out_features: int, scale: float):
        super().__init__()
        self.base_layer = base_layer
        self.in_features = in_features
        self.out_features = out_features
        self.scale = scale
        self.down: torch.Tensor | None = None  # W_v: [B, in, r], per sample (an activation)
        # W_s is a generator parameter [k, r, out]; the wrapper keeps the parameter and its block
        # index, and slices it only inside forward. Under DeepSpeed ZeRO-3 the parameter is
        # gathered just for the forward of a module it is registered with, so a slice taken
        # earlier would point at an empty partition (pipelines registers it as external).
        # Held in a tuple on purpose: assigning an nn.Parameter attribute would register it as
        # a parameter of this wrapper too (it belongs to the generator).
        self._w_s: tuple[torch.Tensor, int] | None = None

    @property
    def up(self) -> torch.Tensor | None:
        """W_s of this block: [r, out]."""
        if self._w_s is None:
            return None
        w_s, index = self._w_s
        return w_s[index]

    def set_delta(self, down: torch.Tensor, w_s: torch.Tensor, block_index: int = 0) -> None:
        """down: W_v [B, in, r]; w_s: the stacked W_s [k, r, out] and this block's index in it."""
        if down.dim() != 3 or down.shape[1] != self.in_features:
            raise ValueError(f"W_v must be [B, {self.in_features}, r], got {tuple(down.shape)}")
        if w_s.dim() != 3 or tuple(w_s.shape[1:]) != (down.shape[2], self.out_features):
            raise ValueError(
                f"W_s must be [k, {down.shape[2]}, {self.out_features}], got {tuple(w_s.shape)}"
            )
        self.down, self._w_s = down, (w_s, block_index)

    def clear_delta(self) -> None:
        self.down, self._w_s = None, None

    def _factors_for(self, batch: int) -> torch.Tensor:
        assert self.down is not None
        down = self.down
        if down.shape[0] != batch:
            # generate() with beams / several return sequences repeats each sample contiguously
            if batch % down.shape[0]:
                raise ValueError(
                    f"delta batch {down.shape[0]} does not divide the input batch {batch}"
                )
            down = down.repeat_interleave(batch // down.shape[0], dim=0)
        return down

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """s · (x · W_v[b]) · W_s for x [B, T, in] → [B, T, out]."""
        if x.dim() != 3:
            raise ValueError(f"expected [B, T, {self.in_features}] input, got {tuple(x.shape)}")
        down = self._factors_for(x.shape[0]).to(x.dtype)
        up = self.up
        assert up is not None
        hidden = torch.bmm(x, down)  # [B, T, r]
        return (hidden @ up.to(x.dtype)) * self.scale  # [B, T, out]

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, scale={self.scale}"


class DeltaLinear(LowRankDelta):
    """nn.Linear + per-sample delta; for one image the delta can be merged into the weight."""

    def __init__(self, base_layer: nn.Linear, scale: float) -> None:
        super().__init__(base_layer, base_layer.in_features, base_layer.out_features, scale)
        self._unmerged_weight: torch.Tensor | None = None

    @property
    def merged(self) -> bool:
        return self._unmerged_weight is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)  # [B, T, out]
        if self.down is None or self.merged:
            return y
        return y + self.delta(x)

    @torch.no_grad()
    def merge(self) -> None:
        """W ← W + s·(W_v W_s)ᵀ for the single sample whose factors are set.

        The original weight tensor is kept aside (not a copy of it: the merged weight is a new
        tensor), so `unmerge` restores it bit for bit.
        """
        if self.merged:
            raise RuntimeError("already merged; call unmerge() first")
        up = self.up
        if self.down is None or up is None:
            raise RuntimeError("no delta set to merge")
        if self.down.shape[0] != 1:
            raise ValueError(f"merging needs exactly one sample, got {self.down.shape[0]}")
        weight = self.base_layer.weight  # [out, in]
        delta_t = (self.down[0].float() @ up.float()).T * self.scale  # [out, in]
        merged = (weight.float() + delta_t).to(weight.dtype)
        self._unmerged_weight = weight.data
        weight.data = merged

    @torch.no_grad()
    def unmerge(self) -> None:
        if self._unmerged_weight is None:
            return
        self.base_layer.weight.data = self._unmerged_weight
        self._unmerged_weight = None


class DeltaParallelBranch(LowRankDelta):
    """Parallel h→h low-rank branch around a whole module (the release's "m" delta on the MLP).

    There is no single weight to merge into (the MLP is gate/up/down with a non-linearity), so
    this branch always runs factorised; it costs 2·2·h·r FLOPs per token, under 1% of a block.
    """

    def __init__(self, base_layer: nn.Module, hidden_size: int, scale: float) -> None:
        super().__init__(base_layer, hidden_size, hidden_size, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)  # [B, T, h]
        if self.down is None:
            return y
        return y + self.delta(x)
