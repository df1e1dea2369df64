"""The perceptual weights generator (VLORA_SPEC.md "Model"; paper §3.3, Fig. 3).

Visual features z [B, L, d_v] → Linear(d_v → h_p) + learned positions → N pre-LN decoder blocks
(self-attention over k perceptual queries, cross-attention to z, 4·h_p GELU feed-forward) →
final LayerNorm → one shared Linear(h_p → in·r) per delta type, applied to each of the k query
outputs and reshaped to W_v [B, k, in, r]. Each delta type also owns W_s [k, r, out], k
independent zero-initialised matrices, so ΔW = W_v · W_s is zero at initialisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlora.config import GeneratorConfig
from vlora.delta.injection import DeltaType


class Attention(nn.Module):
    """Multi-head attention with separate query and key/value inputs (self or cross)."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self._split(self.q_proj(query))  # [B, H, Q, d]
        k = self._split(self.k_proj(context))  # [B, H, L, d]
        v = self._split(self.v_proj(context))  # [B, H, L, d]
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)  # [B, H, Q, d]
        out = out.transpose(1, 2).flatten(2)  # [B, Q, h_p]
        return self.out_proj(out)


class GeneratorBlock(nn.Module):
    """Pre-LN decoder block: self-attention, cross-attention to the visual features, FFN."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.self_norm = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, config.num_heads, config.dropout)
        self.cross_norm = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, config.num_heads, config.dropout)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, config.ffn_mult * dim),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.ffn_mult * dim, dim),
        )

    def forward(self, queries: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        normed = self.self_norm(queries)  # [B, Q, h_p]
        queries = queries + self.self_attn(normed, normed)
        queries = queries + self.cross_attn(self.cross_norm(queries), visual)
        return queries + self.ffn(self.ffn_norm(queries))


class WeightsDecoder(nn.Module):
    """Input projection, positions, queries and N blocks: z [B, L, d_v] → p_v [B, Q, h_p]."""

    def __init__(
        self, config: GeneratorConfig, feature_dim: int, num_visual_tokens: int, num_queries: int
    ) -> None:
        super().__init__()
        dim = config.hidden_size
        self.input_proj = nn.Linear(feature_dim, dim)
        self.position_embedding = nn.Parameter(torch.randn(num_visual_tokens, dim) * 0.02)
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.blocks = nn.ModuleList(GeneratorBlock(config) for _ in range(config.num_blocks))
        self.final_norm = nn.LayerNorm(dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        visual = self.input_proj(features) + self.position_embedding  # [B, L, h_p]
        queries = self.queries.unsqueeze(0).expand(features.shape[0], -1, -1)  # [B, Q, h_p]
        for block in self.blocks:
            queries = block(queries, visual)
        return self.final_norm(queries)  # [B, Q, h_p]


class PerceptualWeightsGenerator(nn.Module):
    """All delta types: one decoder per type (paper) or one shared decoder, heads, and W_s."""

    def __init__(
        self,
        config: GeneratorConfig,
        delta_types: list[DeltaType],
        num_inserted_blocks: int,
        feature_dim: int,
        num_visual_tokens: int,
    ) -> None:
        super().__init__()
        self.config = config
        self.delta_types = list(delta_types)
        self.num_inserted_blocks = k = num_inserted_blocks
        rank, dim = config.rank, config.hidden_size
        if config.share_across_targets:
            shared = WeightsDecoder(config, feature_dim, num_visual_tokens, k * len(delta_types))
            self.decoders = nn.ModuleDict({"shared": shared})
        else:
            self.decoders = nn.ModuleDict(
                {
                    t.name: WeightsDecoder(config, feature_dim, num_visual_tokens, k)
                    for t in delta_types
                }
            )
        # The shared head of the paper: one Linear(h_p → in·r) for all k blocks of a type.
        self.heads = nn.ModuleDict(
            {t.name: nn.Linear(dim, t.in_features * rank) for t in delta_types}
        )
        # W_s: k independent r×out matrices per type, zero-initialised (LoRA's B).
        self.w_s = nn.ParameterDict(
            {t.name: nn.Parameter(torch.zeros(k, rank, t.out_features)) for t in delta_types}
        )

    def _query_outputs(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        k = self.num_inserted_blocks
        if "shared" in self.decoders:
            outputs = self.decoders["shared"](features)  # [B, k·T, h_p]
            return {t.name: outputs[:, i * k : (i + 1) * k] for i, t in enumerate(self.delta_types)}
        return {t.name: self.decoders[t.name](features) for t in self.delta_types}  # [B, k, h_p]

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Visual features [B, L, d_v] → {type: W_v [B, k, in, r]}."""
        batch, rank = features.shape[0], self.config.rank
        factors = {}
        outputs = self._query_outputs(features)
        for t in self.delta_types:
            w_v = self.heads[t.name](outputs[t.name])  # [B, k, in·r]
            factors[t.name] = w_v.view(batch, self.num_inserted_blocks, t.in_features, rank)
        return factors
