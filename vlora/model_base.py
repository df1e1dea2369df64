"""What VLoRA and the input-space baseline share: building, image encoding, freezing, the
preamble of every forward and generate (`prepare_inputs`), text-level generation and the
Hugging Face-style save/load API."""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from PIL import Image
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from vlora import checkpoint
from vlora.config import ModelConfig
from vlora.data.templates import Turn, get_template
from vlora.data.tokenize import IMAGE_TOKEN_INDEX, encode_conversation, stop_token_ids
from vlora.inputs import ImagesInput, pad_rows, resolve_has_image
from vlora.llm import build_llm
from vlora.presets import get_preset
from vlora.tokenizer import load_tokenizer
from vlora.vision import VisionEncoder, build_vision_encoder

logger = logging.getLogger(__name__)


def count_parameters(module: nn.Module, trainable: bool | None = None) -> int:
    return sum(
        p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable
    )


class ModelInputs(NamedTuple):
    """What a forward or generate works from, after `MultimodalModel.prepare_inputs`."""

    attention_mask: torch.Tensor  # [B, T]; all ones when the caller gave none
    features: torch.Tensor | None  # [n, L, d_v] of the n rows with an image; None when n = 0
    has_image: torch.Tensor  # [B] bool: the rows conditioned on an image


class MultimodalModel(nn.Module, abc.ABC):
    """A frozen vision encoder, an LLM and the trainable bridge between them."""

    kind: ClassVar[str]

    def __init__(
        self,
        config: ModelConfig,
        vision: VisionEncoder,
        llm: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
    ) -> None:
        super().__init__()
        self.config = config
        self.vision = vision
        self.llm = llm
        self.tokenizer = tokenizer
        # Set when LLM weights may differ from `config.llm.source` (trainable in SFT, or loaded
        # from an embedded copy): save_pretrained then writes them instead of a reference.
        self.llm_modified = config.llm.source == "random"
        self.vision.requires_grad_(False)
        self.llm.requires_grad_(False)

    # ----- construction -------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: ModelConfig, meta: bool = False) -> MultimodalModel:
        """Build from a config. `meta=True` builds every module without weights (sizing, FLOPs)."""
        vision = build_vision_encoder(config.vision, meta=meta)
        llm = build_llm(config.llm, meta=meta)
        tokenizer = (
            load_tokenizer(config.llm.tokenizer or config.llm.source, config.llm.revision)
            if not meta
            else None
        )
        return cls(config, vision, llm, tokenizer)  # type: ignore[arg-type]

    @classmethod
    def from_preset(cls, name: str, meta: bool = False) -> MultimodalModel:
        return cls.from_config(get_preset(name).model, meta=meta)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> MultimodalModel:
        """The model saved at `path`; a folder of another kind raises TypeError (load any kind
        with `vlora.auto.load_pretrained`)."""
        return checkpoint.build_model(cls, path)

    def save_pretrained(self, path: str | Path, save_llm: bool | None = None) -> Path:
        """safetensors + JSON config; the base LLM is referenced unless its weights changed."""
        return checkpoint.save_pretrained(self, path, save_llm=save_llm)

    @abc.abstractmethod
    def bridge_modules(self) -> dict[str, nn.Module]:
        """The trainable modules between vision and LLM (generator or projector), by name."""

    # ----- devices, freezing --------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.llm.parameters()).device

    def set_trainable(self, bridge: bool = True, llm: bool = False) -> None:
        """The vision encoder is always frozen; the LLM is trainable in SFT only."""
        for module in self.bridge_modules().values():
            module.requires_grad_(bridge)
        self.llm.requires_grad_(llm)
        if llm:
            self.llm_modified = True

    def parameter_report(self) -> str:
        """One line per part: frozen/trainable parameter counts (logged by every recipe)."""
        parts = {"vision": self.vision, "llm": self.llm, **self.bridge_modules()}
        lines = []
        for name, module in parts.items():
            own = module if name != "llm" else self.llm
            trainable = count_parameters(own, trainable=True)
            total = count_parameters(own)
            state = (
                "trainable"
                if trainable == total and total
                else "frozen"
                if not trainable
                else "partly trainable"
            )
            lines.append(f"{name:<10} {state:<17} {total:>14,d} params ({trainable:,d} trainable)")
        return "\n".join(lines)

    def enable_gradient_checkpointing(self) -> None:
        # Non-reentrant checkpointing recomputes each block with the same delta factors and
        # gives gradients to inputs that are not block arguments (the generator's outputs).
        self.llm.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
        self.llm.config.use_cache = False

    # ----- images ---------------------------------------------------------------------------
    def image_features(
        self,
        batch_size: int,
        images: ImagesInput = None,
        image_features: torch.Tensor | None = None,
        has_image: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Features of the samples that have an image, [n, L, d_v], and the mask [B]."""
        mask = resolve_has_image(batch_size, images, image_features, has_image)
        if not bool(mask.any()):
            return None, mask
        if image_features is not None:
            features = image_features[mask.to(image_features.device)]
            if features.shape[-1] != self.config.vision.feature_dim:
                raise ValueError(
                    f"image_features: width {features.shape[-1]} does not match "
                    f"vision.feature_dim {self.config.vision.feature_dim}"
                )
        elif isinstance(images, torch.Tensor):
            features = self._encode_pixels(images[mask.to(images.device)])
        else:
            present = [im for im, m in zip(images, mask.tolist(), strict=True) if m]  # type: ignore[arg-type]
            features = self._encode_pixels(self.vision.preprocess(present))
        return features.to(self.device), mask.to(self.device)

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        param = next(self.vision.parameters())
        with torch.no_grad():
            return self.vision(pixels.to(device=param.device, dtype=param.dtype))  # [n, L, d_v]

    # ----- the preamble of forward and generate --------------------------------------------
    def conditioned_rows(
        self, features: torch.Tensor | None, has_image: torch.Tensor
    ) -> torch.Tensor:
        """The rows [B] conditioned on an image, given the rows `has_image` that bring one.

        Here those rows; VLoRA overrides it (while merged, the merged image conditions every row).
        """
        return has_image

    def prepare_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        images: ImagesInput,
        image_features: torch.Tensor | None,
        has_image: torch.Tensor | None,
    ) -> ModelInputs:
        """The preamble of every forward and generate: the attention mask (all ones when None),
        the features of the rows with an image (encoded from `images` unless given) and the
        conditioned rows, checked against the image placeholders in `input_ids` [B, T]."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        features, mask = self.image_features(input_ids.shape[0], images, image_features, has_image)
        mask = self.conditioned_rows(features, mask)
        self.placeholder_check(input_ids, mask)
        return ModelInputs(attention_mask, features, mask)

    # ----- generation ---------------------------------------------------------------------
    @abc.abstractmethod
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        images: ImagesInput = None,
        image_features: torch.Tensor | None = None,
        has_image: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """Greedy/sampled continuation; returns only the new tokens [B, new]."""

    @torch.no_grad()
    def generate_text(
        self,
        prompts: Sequence[str],
        images: Sequence[Image.Image | None] | None = None,
        max_new_tokens: int = 64,
        template: str | None = None,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Questions (+ optional images) → answers, with the model's conversation template.

        An image is placed before the question ("<image>\\n{q}", LLaVA's convention) unless the
        prompt already holds the image token.
        """
        chat = get_template(template or self.config.template)
        image_list = list(images) if images is not None else [None] * len(prompts)
        rows = []
        for prompt, image in zip(prompts, image_list, strict=True):
            text = prompt
            if image is not None and self.config.image_token not in prompt:
                text = f"{self.config.image_token}\n{prompt}"
            encoded = encode_conversation(
                self.tokenizer, chat, [Turn("user", text)], self.config.image_token, True
            )
            rows.append(torch.tensor(encoded.input_ids))
        input_ids = pad_rows(rows, self.tokenizer.pad_token_id, left=True)  # [B, T]
        attention_mask = pad_rows([torch.ones_like(r) for r in rows], 0, left=True)
        input_ids = input_ids.masked_fill(attention_mask == 0, self.tokenizer.pad_token_id)
        generate_kwargs.setdefault("do_sample", False)
        generate_kwargs.setdefault("eos_token_id", stop_token_ids(self.tokenizer, chat))
        generate_kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        new_tokens = self.generate(
            input_ids.to(self.device),
            attention_mask.to(self.device),
            images=image_list if any(im is not None for im in image_list) else None,
            max_new_tokens=max_new_tokens,
            **generate_kwargs,
        )
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [t.split(chat.eos)[0].strip() if chat.eos.strip() else t.strip() for t in texts]

    def placeholder_check(self, input_ids: torch.Tensor, mask: torch.Tensor) -> None:
        """Every sample with an image has exactly one placeholder at most; text-only ones none."""
        counts = (input_ids == IMAGE_TOKEN_INDEX).sum(dim=1)
        too_many = (counts > 1).nonzero().flatten().tolist()
        if too_many:
            raise ValueError(f"rows {too_many} have more than one image placeholder")
        orphan = ((counts == 1) & ~mask.to(counts.device)).nonzero().flatten().tolist()
        if orphan:
            raise ValueError(f"rows {orphan} have an image placeholder but no image")
