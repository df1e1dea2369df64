"""InputSpaceModel: the LLaVA-v1.5 design behind the same API, for fair comparisons.

Visual features [L, d_v] → 2-layer GELU MLP projector → L tokens of width h spliced into the
LLM's input embeddings where the image placeholder sits (labels IGNORE_INDEX there). Same
vision encoder, LLM, tokenizer and data as VLoRA; only the bridge differs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutputWithPast

from vlora.config import ModelConfig, ProjectorConfig
from vlora.data.tokenize import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from vlora.inputs import ImagesInput, is_left_padded, pad_rows
from vlora.loss import LogitsFor, causal_lm_output, check_logits_for
from vlora.model_base import MultimodalModel
from vlora.vision import VisionEncoder


def build_projector(config: ProjectorConfig, feature_dim: int, hidden_size: int) -> nn.Module:
    if config.kind == "linear":
        return nn.Linear(feature_dim, hidden_size)
    return nn.Sequential(
        nn.Linear(feature_dim, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size)
    )


class InputSpaceModel(MultimodalModel):
    kind: ClassVar[str] = "input_space"

    def __init__(
        self,
        config: ModelConfig,
        vision: VisionEncoder,
        llm: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
    ) -> None:
        super().__init__(config, vision, llm, tokenizer)
        self.projector = build_projector(
            config.projector, config.vision.feature_dim, llm.config.hidden_size
        )
        param = next(llm.parameters())
        if param.device.type != "meta":
            self.projector.to(device=param.device, dtype=param.dtype)

    def bridge_modules(self) -> dict[str, nn.Module]:
        return {"projector": self.projector}

    def build_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None,
        features: torch.Tensor | None,
        has_image: torch.Tensor,
        left: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Splice projected visual tokens at the placeholders: embeds [B, T', h], mask, labels.

        Rows are re-padded on the `left` side (None: the side the input batch used).
        """
        embed = self.llm.get_input_embeddings()
        text_embeds = embed(input_ids.clamp(min=0))  # [B, T, h]; placeholder ids are negative
        visual = self.projector(features.to(text_embeds.dtype)) if features is not None else None
        left = is_left_padded(attention_mask) if left is None else left
        rows_e, rows_m, rows_l = [], [], []
        image_row = 0
        for b in range(input_ids.shape[0]):
            real = attention_mask[b] == 1
            ids, emb = input_ids[b][real], text_embeds[b][real]
            lab = labels[b][real] if labels is not None else None
            where = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten()
            if bool(has_image[b]):
                if where.numel() != 1:
                    raise ValueError(f"row {b} has an image but no image placeholder in input_ids")
                p = int(where[0])
                vis = visual[image_row]  # [L, h]
                image_row += 1
                emb = torch.cat([emb[:p], vis, emb[p + 1 :]])
                if lab is not None:
                    ignore = lab.new_full((vis.shape[0],), IGNORE_INDEX)
                    lab = torch.cat([lab[:p], ignore, lab[p + 1 :]])
            rows_e.append(emb)
            rows_m.append(torch.ones(emb.shape[0], dtype=attention_mask.dtype, device=emb.device))
            if lab is not None:
                rows_l.append(lab)
        embeds = pad_rows(rows_e, 0.0, left)  # [B, T', h]
        mask = pad_rows(rows_m, 0, left)
        new_labels = pad_rows(rows_l, IGNORE_INDEX, left) if labels is not None else None
        return embeds, mask, new_labels

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
        """Loss and logits; logits cover visual and text positions (L + T per sample).

        `logits_for="labelled"` (training): logits [n, V] only where the next token is
        labelled, same loss (`vlora.loss`); the L visual positions never are.
        """
        check_logits_for(logits_for, labels)
        attention_mask, features, mask = self.prepare_inputs(
            input_ids, attention_mask, images, image_features, has_image
        )
        embeds, new_mask, new_labels = self.build_inputs(
            input_ids, attention_mask, labels, features, mask
        )
        return causal_lm_output(
            self.llm,
            new_labels,
            logits_for,
            inputs_embeds=embeds,
            attention_mask=new_mask,
            **llm_kwargs,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        images: ImagesInput = None,
        image_features: torch.Tensor | None = None,
        has_image: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """Continue the prompts (re-padded on the left); returns only the new tokens [B, new]."""
        attention_mask, features, mask = self.prepare_inputs(
            input_ids, attention_mask, images, image_features, has_image
        )
        embeds, new_mask, _ = self.build_inputs(
            input_ids, attention_mask, None, features, mask, left=True
        )
        # With inputs_embeds only, transformers returns just the generated tokens.
        return self.llm.generate(inputs_embeds=embeds, attention_mask=new_mask, **generate_kwargs)
