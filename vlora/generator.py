"""The perceptual weights generator (paper §3.3, Fig. 3; the method is summarised in docs/method.md).

Visual features z [B, L, d_v] → Linear(d_v → h_p) + learned positions (one input shared by every
delta type, as the authors' release has it) → per type: k perceptual queries through N pre-LN
decoder blocks (self-attention over the queries, cross-attention to z, 4·h_p GELU feed-forward)
→ final LayerNorm → one shared Linear(h_p → in·r) applied to each of the k query outputs and
reshaped to W_v [B, k, in, r]. Each delta type also owns W_s [k, r, out], k independent
zero-initialised matrices, so ΔW = W_v · W_s is zero at initialisation.

Initialisation follows the release (`init_scheme="release"`, see `init_release_`); the
PyTorch-default scheme of earlier versions stays reachable for comparison.
"""

from __future__ import annotations

import math

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
        # the keys and values are the projected features as they are (not normed), as released
        queries = queries + self.cross_attn(self.cross_norm(queries), visual)
        return queries + self.ffn(self.ffn_norm(queries))


class VisualInput(nn.Module):
    """z [B, L, d_v] → Linear(d_v → h_p) + learned positions [L, h_p]."""

    def __init__(self, feature_dim: int, num_visual_tokens: int, dim: int) -> None:
        super().__init__()
        self.input_proj = nn.Linear(feature_dim, dim)
        self.position_embedding = nn.Parameter(torch.zeros(num_visual_tokens, dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.input_proj(features) + self.position_embedding  # [B, L, h_p]


class WeightsDecoder(nn.Module):
    """Queries and N blocks: projected visual features [B, L, h_p] → p_v [B, Q, h_p].

    With `own_input` (`shared_input=False`, the layout of checkpoints written before format 2)
    the decoder owns its input projection and positions, under the parameter names those
    checkpoints use (`input_proj`, `position_embedding`), and takes raw features [B, L, d_v].
    """

    def __init__(
        self,
        config: GeneratorConfig,
        feature_dim: int,
        num_visual_tokens: int,
        num_queries: int,
        own_input: bool = False,
    ) -> None:
        super().__init__()
        dim = config.hidden_size
        self.input_proj: nn.Linear | None = None
        self.position_embedding: nn.Parameter | None = None
        if own_input:
            self.input_proj = nn.Linear(feature_dim, dim)
            self.position_embedding = nn.Parameter(torch.zeros(num_visual_tokens, dim))
        self.queries = nn.Parameter(torch.zeros(num_queries, dim))
        self.blocks = nn.ModuleList(GeneratorBlock(config) for _ in range(config.num_blocks))
        self.final_norm = nn.LayerNorm(dim)

    def forward(self, visual: torch.Tensor) -> torch.Tensor:
        if self.input_proj is not None:
            visual = self.input_proj(visual) + self.position_embedding  # [B, L, h_p]
        queries = self.queries.unsqueeze(0).expand(visual.shape[0], -1, -1)  # [B, Q, h_p]
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
        own_input = not config.shared_input
        self.input = None if own_input else VisualInput(feature_dim, num_visual_tokens, dim)
        if config.share_across_targets:
            shared = WeightsDecoder(
                config, feature_dim, num_visual_tokens, k * len(delta_types), own_input
            )
            self.decoders = nn.ModuleDict({"shared": shared})
        else:
            self.decoders = nn.ModuleDict(
                {
                    t.name: WeightsDecoder(config, feature_dim, num_visual_tokens, k, own_input)
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
        if config.init_scheme == "release":
            init_release_(self)
        else:
            init_pytorch_default_(self)
        for w_s in self.w_s.values():
            nn.init.zeros_(w_s)  # ΔW = 0 at init whatever the scheme: the model starts as the LLM

    def _query_outputs(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        k = self.num_inserted_blocks
        visual = self.input(features) if self.input is not None else features  # [B, L, h_p]
        if "shared" in self.decoders:
            outputs = self.decoders["shared"](visual)  # [B, k·T, h_p]
            return {t.name: outputs[:, i * k : (i + 1) * k] for i, t in enumerate(self.delta_types)}
        return {t.name: self.decoders[t.name](visual) for t in self.delta_types}  # [B, k, h_p]

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Visual features [B, L, d_v] → {type: W_v [B, k, in, r]}."""
        batch, rank = features.shape[0], self.config.rank
        factors = {}
        outputs = self._query_outputs(features)
        for t in self.delta_types:
            w_v = self.heads[t.name](outputs[t.name])  # [B, k, in·r]
            factors[t.name] = w_v.view(batch, self.num_inserted_blocks, t.in_features, rank)
        return factors


@torch.no_grad()
def init_release_(generator: nn.Module) -> None:
    """The authors' initialisation (their `weights_generater.py`), on our module layout; applies
    to a whole generator or to any of its parts.

    - Every Linear (input projection, attention output, FFN, heads): truncated normal with std
      0.02 and zero bias (ViT/BERT practice). Small heads keep the initial W_v small, so the
      first updates of W_s (zero at start) do not meet huge factors.
    - Attention in-projections: their release uses `nn.MultiheadAttention`, whose packed
      [3·h_p, h_p] in-projection is Xavier-uniform over the packed shape, bias 0. Our q, k and
      v are separate Linears; each gets the packed bound sqrt(6 / (h_p + 3·h_p)) so the
      distribution is exactly theirs.
    - Learned queries and positions: N(0, 1). Their init function never reaches bare
      parameters, so these keep `torch.randn`. Unit-scale queries are what make the k query
      outputs differ from the start: with std 0.02 queries, the residual stream is dominated
      by what cross-attention reads from the image, the same for all k queries, and the k
      inserted blocks begin with near-identical W_v (measured mean pairwise cosine 0.99 at
      h_p=512, N=8; 0.07–0.16 with this scheme; see tests/vlora/test_generator_init.py).
    - LayerNorms: weight 1, bias 0. W_s stays zero (set by the generator itself).
    """
    for module in generator.modules():
        if isinstance(module, Attention):
            dim = module.q_proj.in_features
            bound = math.sqrt(6.0 / (dim + 3 * dim))
            for proj in (module.q_proj, module.k_proj, module.v_proj):
                nn.init.uniform_(proj.weight, -bound, bound)
                nn.init.zeros_(proj.bias)
            _trunc_normal_linear(module.out_proj)
        elif isinstance(module, GeneratorBlock):
            for layer in module.ffn:
                if isinstance(layer, nn.Linear):
                    _trunc_normal_linear(layer)
        elif isinstance(module, VisualInput):
            _trunc_normal_linear(module.input_proj)
            nn.init.normal_(module.position_embedding, 0.0, 1.0)
        elif isinstance(module, WeightsDecoder):
            nn.init.normal_(module.queries, 0.0, 1.0)
            if module.input_proj is not None:
                _trunc_normal_linear(module.input_proj)
                nn.init.normal_(module.position_embedding, 0.0, 1.0)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, PerceptualWeightsGenerator):
            for head in module.heads.values():
                _trunc_normal_linear(head)


@torch.no_grad()
def init_pytorch_default_(generator: nn.Module) -> None:
    """Earlier versions: PyTorch's default Linear init (already applied), queries and positions
    N(0, 0.02²). Kept to reproduce the comparison with the release scheme."""
    for module in generator.modules():
        if isinstance(module, VisualInput):
            nn.init.normal_(module.position_embedding, 0.0, 0.02)
        elif isinstance(module, WeightsDecoder):
            nn.init.normal_(module.queries, 0.0, 0.02)
            if module.position_embedding is not None:
                nn.init.normal_(module.position_embedding, 0.0, 0.02)


def _trunc_normal_linear(layer: nn.Linear) -> None:
    nn.init.trunc_normal_(layer.weight, std=0.02)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
