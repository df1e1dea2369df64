"""VLoRAModel: images become per-sample low-rank deltas inside an unmodified HF causal LM.

    model = VLoRAModel.from_preset("tiny-llama")
    out = model(input_ids=ids, attention_mask=mask, images=pixels, labels=labels)  # loss, logits
    new_tokens = model.generate(ids, mask, images=pixels, max_new_tokens=32)
    model.merge(images=[image]); …; model.unmerge()  # one image baked into the weights

The LLM's input holds text only: an image placeholder in the ids is removed. Text-only samples
(`has_image` False, or None in an image list) get ΔW = 0.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutputWithPast

from vlora.config import ModelConfig
from vlora.delta.injection import DeltaPlan, inject_deltas, plan_deltas
from vlora.delta.layers import DeltaLinear, LowRankDelta
from vlora.generator import PerceptualWeightsGenerator
from vlora.inputs import ImagesInput, TokenBatch, strip_image_placeholders
from vlora.loss import LogitsFor, causal_lm_output, check_logits_for
from vlora.model_base import MultimodalModel
from vlora.vision import VisionEncoder

logger = logging.getLogger(__name__)

DeltaMode = Literal["auto", "merged", "factorised"]
# When one image is merged rather than kept factorised (benchmarks/merge_crossover.py and
# benchmarks/gpu_h200.py; README "Performance"). Merging costs a fixed T_merge (k·4 products
# W_v·W_s plus weight-sized adds); factorised pays the low-rank branches at every token. The
# crossover n* = (T_merge − branches(prompt)) / branches(1 token) depends on the device:
# - CPU (Xeon, fp32, 1 thread), 32-token prompt, two runs: n* = 25 and 34 (SmolLM2-135M), 27
#   and 21 (Llama, 7B proportions at h=512) → merge from 32 new tokens. Near n* the two modes
#   differ by well under 1% (|n − n*| × ~1.5 ms per token on a ~70 ms decode step).
# - CUDA (H200, bf16, Vicuna-7B shapes): n* = 0.7 (eager branches are launch-bound: +5.5 ms per
#   decode step against a 9.2 ms merge) → merge from the first new token.
MERGE_MIN_NEW_TOKENS = 32
MERGE_MIN_NEW_TOKENS_BY_DEVICE = {"cuda": 1}  # device type → threshold; others use the above


class VLoRAModel(MultimodalModel):
    kind: ClassVar[str] = "vlora"

    def __init__(
        self,
        config: ModelConfig,
        vision: VisionEncoder,
        llm: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
    ) -> None:
        super().__init__(config, vision, llm, tokenizer)
        self.plan: DeltaPlan = plan_deltas(llm, config.generator)
        self.deltas: dict[str, list[LowRankDelta]] = inject_deltas(
            llm, self.plan, config.generator.scale
        )
        param = next(llm.parameters())
        # a weight-free (meta) model gets a weight-free generator: the paper's has 852M
        # parameters, which would otherwise be allocated and initialised for nothing
        on_meta = param.device.type == "meta"
        with torch.device("meta") if on_meta else contextlib.nullcontext():
            self.generator = PerceptualWeightsGenerator(
                config.generator,
                self.plan.types,
                num_inserted_blocks=len(self.plan.blocks),
                feature_dim=config.vision.feature_dim,
                num_visual_tokens=config.vision.num_patches,
            )
        if not on_meta:
            self.generator.to(param.device)
        self._merged = False

    def bridge_modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator}

    # ----- deltas ---------------------------------------------------------------------------
    def compute_factors(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Visual features [n, L, d_v] → {type: W_v [n, k, in, r]} (differentiable)."""
        gen_param = next(self.generator.parameters())
        return self.generator(features.to(gen_param.dtype))

    def set_deltas(
        self, features: torch.Tensor | None, has_image: torch.Tensor, batch_size: int
    ) -> None:
        """Set W_v (zero rows for text-only samples) and W_s on every wrapper."""
        if self._merged:
            raise RuntimeError("the model is merged with an image; call unmerge() first")
        if features is None:
            self.clear_deltas()
            return
        factors = self.compute_factors(features)
        for delta_type in self.plan.types:
            w_v = factors[delta_type.name]  # [n, k, in, r]
            if w_v.shape[0] != batch_size:
                full = w_v.new_zeros(batch_size, *w_v.shape[1:])  # [B, k, in, r]
                full = full.index_copy(0, has_image.nonzero().flatten(), w_v)
                w_v = full
            w_s = self.generator.w_s[delta_type.name]  # [k, r, out]
            for j, wrapper in enumerate(self.deltas[delta_type.name]):
                wrapper.set_delta(w_v[:, j], w_s, j)

    def w_s_users(self) -> list[tuple[nn.Module, nn.Parameter]]:
        """(wrapper, W_s parameter) pairs: W_s is used in the wrappers' forward, not the
        generator's. Sharded-parameter engines (DeepSpeed ZeRO-3) must gather it there."""
        return [
            (wrapper, self.generator.w_s[delta_type.name])
            for delta_type in self.plan.types
            for wrapper in self.deltas[delta_type.name]
        ]

    def clear_deltas(self) -> None:
        for wrapper in self._wrappers():
            wrapper.clear_delta()

    def _wrappers(self) -> Iterator[LowRankDelta]:
        for wrappers in self.deltas.values():
            yield from wrappers

    # ----- forward --------------------------------------------------------------------------
    def conditioned_rows(
        self, features: torch.Tensor | None, has_image: torch.Tensor
    ) -> torch.Tensor:
        if self._merged and features is None:
            return torch.ones_like(has_image)  # every sample sees the merged image
        return has_image

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        images: ImagesInput = None,
        image_features: torch.Tensor | None = None,
        has_image: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        logits_for: LogitsFor = "all",
        **llm_kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Loss and logits; logits cover the text tokens only (placeholders removed).

        `logits_for="labelled"` (training): logits [n, V] only where the next token is
        labelled, same loss (`vlora.loss`).
        """
        check_logits_for(logits_for, labels)
        attention_mask, features, mask = self.prepare_inputs(
            input_ids, attention_mask, images, image_features, has_image
        )
        tokens = strip_image_placeholders(
            TokenBatch(input_ids, attention_mask, labels), self.tokenizer.pad_token_id
        )
        if not self._merged or features is not None:
            self.set_deltas(features, mask, input_ids.shape[0])
        return causal_lm_output(
            self.llm,
            tokens.labels,
            logits_for,
            input_ids=tokens.input_ids,
            attention_mask=tokens.attention_mask,
            **llm_kwargs,
        )

    # ----- merge ----------------------------------------------------------------------------
    @torch.no_grad()
    def merge(self, images: ImagesInput = None, image_features: torch.Tensor | None = None) -> None:
        """Bake one image's deltas into the LLM weights (q, k, v, o and per-matrix MLP deltas).

        The parallel "m" branch has no weight to merge into and keeps its (batch-1) factors.
        Until `unmerge`, calls without images use the merged image.
        """
        features, mask = self.image_features(1, images, image_features, None)
        if features is None:
            raise ValueError("merge needs exactly one image")
        self.set_deltas(features, mask, 1)
        for wrapper in self._wrappers():
            if isinstance(wrapper, DeltaLinear):
                wrapper.merge()
                wrapper.clear_delta()
        self._merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the original weights bit for bit and drop the merged image."""
        for wrapper in self._wrappers():
            if isinstance(wrapper, DeltaLinear):
                wrapper.unmerge()
        self.clear_deltas()
        self._merged = False

    @property
    def is_merged(self) -> bool:
        return self._merged

    @contextlib.contextmanager
    def merged(self, images: ImagesInput = None, image_features: torch.Tensor | None = None):
        self.merge(images=images, image_features=image_features)
        try:
            yield self
        finally:
            self.unmerge()

    # ----- generation -----------------------------------------------------------------------
    def choose_delta_mode(
        self, batch_size: int, has_image: torch.Tensor, max_new_tokens: int
    ) -> str:
        """'merged' for one image and an answer long enough to repay the merge on this
        device; 'factorised' otherwise (a batch holds one weight per image: never merged)."""
        threshold = MERGE_MIN_NEW_TOKENS_BY_DEVICE.get(self.device.type, MERGE_MIN_NEW_TOKENS)
        if batch_size == 1 and bool(has_image.all()) and max_new_tokens >= threshold:
            return "merged"
        return "factorised"

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        images: ImagesInput = None,
        image_features: torch.Tensor | None = None,
        has_image: torch.Tensor | None = None,
        delta_mode: DeltaMode = "auto",
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """Continue the prompts (re-padded on the left); returns only the new tokens [B, new]."""
        attention_mask, features, mask = self.prepare_inputs(
            input_ids, attention_mask, images, image_features, has_image
        )
        batch_size = input_ids.shape[0]
        tokens = strip_image_placeholders(
            TokenBatch(input_ids, attention_mask, None), self.tokenizer.pad_token_id, left=True
        )
        if features is not None and self._merged:
            raise RuntimeError("the model is merged with an image; call unmerge() first")
        mode = delta_mode
        if mode == "auto":
            mode = self.choose_delta_mode(
                batch_size, mask, int(generate_kwargs.get("max_new_tokens", 20))
            )
        if mode == "merged" and features is not None:
            if batch_size != 1:
                raise ValueError("delta_mode='merged' needs a batch of one image")
            context: Any = self.merged(image_features=features)
        else:
            if not self._merged:
                self.set_deltas(features, mask, batch_size)
            context = contextlib.nullcontext()
        with context:
            output = self.llm.generate(
                input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, **generate_kwargs
            )
        if not self._merged:
            self.clear_deltas()
        return output[:, tokens.input_ids.shape[1] :]
