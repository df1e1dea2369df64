"""Images → what the LLM needs of them, computed once per image and cached.

- VLoRA: the generator's W_v factors, {type: [k, in, r]} (W_s is the checkpoint's, shared by
  every image, so it is not part of an image's conditioning).
- Input-space baseline: the projected visual tokens, [L, h], spliced at the placeholder.

`ImageConditioner` holds only the vision encoder and the bridge (generator or projector), so a
deployment that turns images into conditioning does not keep the LLM in memory. Images are
batched through the encoder and the bridge; each image's tensors are then copied out of the
batch so that a cached entry does not pin the memory of the batch it came from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from PIL import Image
from torch import nn

ConditioningKind = Literal["vlora", "input_space"]
VISUAL_TOKENS = "visual"  # the baseline's single entry


def image_digest(data: bytes) -> str:
    """Content hash of an encoded image (the factor cache's key, with the model version)."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Conditioning:
    """One image's conditioning: VLoRA factors by delta type, or the baseline's visual tokens."""

    kind: ConditioningKind
    tensors: dict[str, torch.Tensor]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    @property
    def visual_tokens(self) -> torch.Tensor:
        """Baseline only: [L, h]."""
        return self.tensors[VISUAL_TOKENS]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Conditioning:
        return Conditioning(
            self.kind, {k: v.to(device=device, dtype=dtype) for k, v in self.tensors.items()}
        )


class ImageConditioner:
    """Vision encoder + bridge of a loaded model; `encode(images)` → one Conditioning each."""

    def __init__(self, model: nn.Module) -> None:
        kind = getattr(model, "kind", None)
        if kind not in ("vlora", "input_space"):
            raise TypeError(f"expected a VLoRAModel or InputSpaceModel, got {type(model).__name__}")
        self.kind: ConditioningKind = kind
        self.vision = model.vision
        self.preprocess = model.vision.preprocess
        # Only the bridge is kept: the model (and its LLM) can be dropped by the caller.
        self.bridge: nn.Module = model.generator if kind == "vlora" else model.projector
        self.num_visual_tokens = model.config.vision.num_patches

    @property
    def device(self) -> torch.device:
        return next(self.bridge.parameters()).device

    @torch.no_grad()
    def encode(self, images: Sequence[Image.Image]) -> list[Conditioning]:
        if not images:
            return []
        pixels = self.preprocess(list(images))  # [n, 3, S, S]
        param = next(self.vision.parameters())
        features = self.vision(pixels.to(device=param.device, dtype=param.dtype))  # [n, L, d_v]
        bridge_dtype = next(self.bridge.parameters()).dtype
        features = features.to(device=self.device, dtype=bridge_dtype)
        if self.kind == "vlora":
            factors = self.bridge(features)  # {type: [n, k, in, r]}
            return [
                Conditioning("vlora", {name: w[i].clone() for name, w in factors.items()})
                for i in range(len(images))
            ]
        visual = self.bridge(features)  # [n, L, h]
        return [Conditioning("input_space", {VISUAL_TOKENS: v.clone()}) for v in visual]


class _Released(nn.Module):
    """Stands where a module was freed; using it says why it is gone."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def forward(self, *args, **kwargs):
        raise RuntimeError(f"{self.what} was released: this process does not encode images")


def _nbytes(module: nn.Module | None) -> int:
    if module is None:
        return 0
    return sum(p.numel() * p.element_size() for p in module.parameters())


def release_image_modules(model: nn.Module) -> int:
    """Free what only image encoding needs, for a process that gets conditioning from elsewhere
    (the generation deployment): the vision tower, and the generator's trunk and heads (VLoRA;
    W_s stays, the delta wrappers use it) or the projector (baseline). Returns bytes freed; at
    the paper's size that is CLIP-L and 852M generator parameters per generation replica."""
    freed = _nbytes(model.vision)
    model.vision = _Released("the vision encoder")
    if model.kind == "vlora":
        for name, child in list(model.generator.named_children()):
            if name != "w_s" and child is not None:
                freed += _nbytes(child)
                setattr(model.generator, name, _Released(f"generator.{name}"))
    else:
        freed += _nbytes(model.projector)
        model.projector = _Released("the projector")
    return freed
