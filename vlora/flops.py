"""The paper's cost model (§3.4, Appendix A), plus the generator's own cost counted apart.

With d blocks of hidden size h, C text tokens, L visual tokens, k inserted blocks, rank r:
    input-space (LLaVA):       24(L+C)·d·h² + 4(L+C)²·d·h
    VLoRA inference (merged):  24C·d·h² + 4C²·d·h + 24k·r·h² + 12k·h²
    VLoRA training:            24C·d·h² + 4C²·d·h + 24k·r·h² + 12C·k·h² + 14C·k·h
As in the paper, a multiply-add counts 2 FLOPs and the generator is left out of these numbers;
`generator_flops` counts it from the real module shapes, per image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from vlora.config import GeneratorConfig, VisionEncoderConfig

Mode = Literal["inference", "training"]


def input_space_flops(d: int, h: int, text_tokens: int, visual_tokens: int) -> float:
    n = visual_tokens + text_tokens
    return 24 * n * d * h**2 + 4 * n**2 * d * h


def vlora_flops(
    d: int, h: int, text_tokens: int, k: int, r: int, mode: Mode = "inference"
) -> float:
    c = text_tokens
    llm = 24 * c * d * h**2 + 4 * c**2 * d * h + 24 * k * r * h**2
    if mode == "inference":
        return llm + 12 * k * h**2
    return llm + 12 * c * k * h**2 + 14 * c * k * h


def delta_shapes(arch: dict[str, Any], generator: GeneratorConfig) -> list[tuple[str, int, int]]:
    """(type, in, out) of every delta type, from an HF architecture dict (no model built)."""
    h = arch["hidden_size"]
    heads = arch["num_attention_heads"]
    head_dim = arch.get("head_dim") or h // heads
    kv = arch.get("num_key_value_heads") or heads
    ffn = arch["intermediate_size"]
    shapes = {
        "q": [("q", h, heads * head_dim)],
        "k": [("k", h, kv * head_dim)],
        "v": [("v", h, kv * head_dim)],
        "o": [("o", heads * head_dim, h)],
        "m": [("m", h, h)]
        if generator.mlp_mode == "parallel"
        else [("gate", h, ffn), ("up", h, ffn), ("down", ffn, h)],
    }
    return [shape for target in generator.targets for shape in shapes[target]]


def _decoder_flops(g: GeneratorConfig, queries: int, visual_tokens: int, feature_dim: int) -> int:
    hp, q, length = g.hidden_size, queries, visual_tokens
    per_block = (
        2 * 4 * q * hp * hp  # self-attention projections
        + 2 * 2 * q * q * hp  # self-attention scores and values
        + 2 * 2 * q * hp * hp  # cross-attention query and output projections
        + 2 * 2 * length * hp * hp  # cross-attention key/value projections of the image
        + 2 * 2 * q * length * hp  # cross-attention scores and values
        + 2 * 2 * q * hp * g.ffn_mult * hp  # feed-forward
    )
    return 2 * length * feature_dim * hp + g.num_blocks * per_block


def generator_flops(
    generator: GeneratorConfig, vision: VisionEncoderConfig, arch: dict[str, Any], k: int
) -> int:
    """FLOPs to turn one image's features into every W_v (decoders + heads), per image."""
    shapes = delta_shapes(arch, generator)
    length, dv = vision.num_patches, vision.feature_dim
    if generator.share_across_targets:
        decoders = _decoder_flops(generator, k * len(shapes), length, dv)
    else:
        decoders = len(shapes) * _decoder_flops(generator, k, length, dv)
    heads = sum(2 * k * generator.hidden_size * fan_in * generator.rank for _, fan_in, _ in shapes)
    return decoders + heads


@dataclass
class CostReport:
    preset: str
    design: Literal["vlora", "input_space"]
    mode: Mode
    text_tokens: int
    visual_tokens: int  # 0 for VLoRA: the LLM input carries no visual tokens
    blocks: int  # d
    hidden_size: int  # h
    inserted_blocks: int  # k
    rank: int
    gflops: float  # the paper's formula, LLM only
    generator_gflops: float  # the generator per image, counted apart (not in `gflops`)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cost_for_preset(
    preset_name: str, text_tokens: int, visual_tokens: int | None = None, mode: Mode = "inference"
) -> CostReport:
    """`visual_tokens` given → the input-space cost; None → VLoRA's (merged for inference)."""
    from vlora.presets import get_preset

    if text_tokens <= 0:
        raise ValueError(f"text_tokens must be positive, got {text_tokens}")
    model = get_preset(preset_name).model
    arch = model.llm.architecture
    if not arch:
        raise ValueError(f"preset '{preset_name}' declares no llm.architecture")
    d, h = arch["num_hidden_layers"], arch["hidden_size"]
    k = len(model.generator.resolve_blocks(d))
    gen = generator_flops(model.generator, model.vision, arch, k) / 1e9
    if visual_tokens is not None:
        if visual_tokens < 0:
            raise ValueError(f"visual_tokens must be non-negative, got {visual_tokens}")
        flops = input_space_flops(d, h, text_tokens, visual_tokens)
        design: Literal["vlora", "input_space"] = "input_space"
        gen = 0.0
    else:
        flops = vlora_flops(d, h, text_tokens, k, model.generator.rank, mode)
        design = "vlora"
    return CostReport(
        preset=preset_name,
        design=design,
        mode=mode,
        text_tokens=text_tokens,
        visual_tokens=visual_tokens or 0,
        blocks=d,
        hidden_size=h,
        inserted_blocks=k,
        rank=model.generator.rank,
        gflops=flops / 1e9,
        generator_gflops=gen,
    )
