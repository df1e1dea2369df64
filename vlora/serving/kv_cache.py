"""The running batch's KV cache: one row per request, rows of different lengths side by side.

Per layer, keys and values are `[slots, kv_heads, capacity, head_dim]`. Row b holds its tokens
at columns 0 .. len_b - 1, so a column is the token's position: a request joins by copying its
prefilled keys into a free row and leaves by moving the last row into its place; nobody else's
tokens move. A decode step writes each row's new key at its own column len_b and attends over
columns 0 .. max(len) with a per-row mask (`decode_mask`). Capacity doubles when a row reaches
it. Preallocated rows avoid what a growing cache costs: `DynamicCache` concatenates the whole
cache at every step, which at the baseline's L = 576 visual tokens copies more bytes per decode
step than the weights.

It implements the part of transformers' `Cache` that attention layers call during a decode
step: `update(key, value, layer_idx)`. Prefill runs on an ordinary `DynamicCache` (`insert`
copies it in).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Cache, PretrainedConfig


def kv_shape(config: PretrainedConfig) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of a decoder config."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, kv_heads, head_dim


class SlotKVCache(Cache):
    def __init__(
        self,
        config: PretrainedConfig,
        max_slots: int,
        dtype: torch.dtype,
        device: torch.device | str,
        capacity: int = 256,
    ) -> None:
        super().__init__(layers=[])
        self.num_layers, self.kv_heads, self.head_dim = kv_shape(config)
        self.max_slots, self.capacity = max_slots, capacity
        self.dtype, self.device = dtype, torch.device(device)
        shape = (max_slots, self.kv_heads, capacity, self.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(self.num_layers)]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.lengths = [0] * max_slots  # tokens held by each row
        self._step: tuple[int, torch.Tensor, torch.Tensor, int] | None = None

    # ----- rows --------------------------------------------------------------------------------
    def _grow(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        capacity = self.capacity
        while capacity < needed:
            capacity *= 2
        for layer in range(self.num_layers):
            for store in (self.keys, self.values):
                grown = store[layer].new_zeros(
                    (self.max_slots, self.kv_heads, capacity, self.head_dim)
                )
                grown[:, :, : self.capacity] = store[layer]
                store[layer] = grown
        self.capacity = capacity

    def insert(self, slot: int, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Row `slot` ← one request's prefilled keys/values, per layer [kv_heads, n, head_dim]."""
        n = layers[0][0].shape[1]
        self._grow(n + 1)
        for layer, (k, v) in enumerate(layers):
            self.keys[layer][slot, :, :n] = k
            self.values[layer][slot, :, :n] = v
        self.lengths[slot] = n

    def move(self, src: int, dst: int) -> None:
        """Row `dst` ← row `src` (a request left `dst`; the last row fills the gap)."""
        n = self.lengths[src]
        for store in (self.keys, self.values):
            for layer in range(self.num_layers):
                store[layer][dst, :, :n] = store[layer][src, :, :n]
        self.lengths[dst] = n
        self.lengths[src] = 0

    def clear(self, slot: int) -> None:
        self.lengths[slot] = 0

    # ----- one decode step over rows 0 .. batch-1 ---------------------------------------------
    def begin_decode(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Prepare a step writing one token per row; returns (position_ids [B, 1], attention
        mask [B, 1, 1, kv_len], True where a row may attend)."""
        lengths = self.lengths[:batch]
        kv_len = max(lengths) + 1
        self._grow(kv_len)
        cols = torch.tensor(lengths, device=self.device)  # [B]: where each row's new key goes
        rows = torch.arange(batch, device=self.device)
        self._step = (batch, rows, cols, kv_len)
        mask = torch.arange(kv_len, device=self.device)[None, :] <= cols[:, None]  # [B, kv_len]
        return cols[:, None], mask[:, None, None, :]

    def end_decode(self) -> None:
        assert self._step is not None
        batch = self._step[0]
        for b in range(batch):
            self.lengths[b] += 1
        self._step = None

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """key/value_states [B, kv_heads, 1, head_dim] → this layer's keys/values
        [B, kv_heads, kv_len, head_dim] with the new token written at each row's column."""
        if self._step is None or key_states.shape[2] != 1:
            raise RuntimeError("SlotKVCache takes one token per row, between begin/end_decode")
        batch, rows, cols, kv_len = self._step
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys[rows, :, cols, :] = key_states[:, :, 0, :]
        values[rows, :, cols, :] = value_states[:, :, 0, :]
        return keys[:batch, :, :kv_len], values[:batch, :, :kv_len]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return max(self.lengths, default=0)

    def __len__(self) -> int:
        return self.num_layers

    def __repr__(self) -> str:
        return (
            f"SlotKVCache(layers={self.num_layers}, slots={self.max_slots}, "
            f"capacity={self.capacity})"
        )

    @property
    def nbytes(self) -> int:
        return 2 * sum(k.numel() * k.element_size() for k in self.keys)
