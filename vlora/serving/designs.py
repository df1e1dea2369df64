"""What differs between serving VLoRA and the input-space baseline: the prompt and the deltas.

- VLoRA: the LLM reads the text tokens only (the placeholder is removed); each row's image is
  in its W_v rows (`DeltaSlots`), or merged into the weights for a lone request.
- Baseline (LLaVA-style): the projected visual tokens are spliced into the input embeddings at
  the placeholder, so the LLM reads L + C positions; no deltas.

Both prefill new requests together, left-padded, with positions counted per row (as
`model.generate` does), and copy each row's keys/values into its KV cache row.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from vlora.data.tokenize import IMAGE_TOKEN_INDEX
from vlora.inputs import pad_rows
from vlora.serving.conditioning import Conditioning
from vlora.serving.delta_slots import DeltaSlots
from vlora.serving.kv_cache import SlotKVCache
from vlora.serving.requests import GenerationRequest


class DesignRunner:
    """The baseline's behaviour; `VLoRARunner` overrides the delta parts."""

    kind = "input_space"
    supports_merge = False

    def __init__(self, model, max_slots: int) -> None:
        self.model = model
        self.llm = model.llm
        self.num_visual_tokens = model.config.vision.num_patches
        self.pad_id = model.tokenizer.pad_token_id

    @property
    def merged(self) -> bool:
        return False

    def prompt_positions(self, request: GenerationRequest) -> int:
        """Positions the LLM reads for the prompt."""
        text = sum(i != IMAGE_TOKEN_INDEX for i in request.prompt_ids)
        return text + (self.num_visual_tokens if request.has_image else 0)

    # slot bookkeeping: the baseline keeps nothing per row besides the KV cache
    def write(self, slot: int, conditioning: Conditioning | None) -> None: ...

    def move(self, src: int, dst: int) -> None: ...

    def set_rows(self, start: int, stop: int) -> str:
        return "none"

    def reset(self) -> None: ...

    def prefill_rows(self, requests: list[GenerationRequest]) -> tuple[str, list[torch.Tensor]]:
        """("inputs_embeds", rows [n_i, h]): text embeddings with the visual tokens spliced in."""
        embed = self.llm.get_input_embeddings()
        device = embed.weight.device
        rows = []
        for request in requests:
            ids = torch.tensor(request.prompt_ids, device=device)
            where = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten()
            text = embed(ids.clamp(min=0))  # [T, h]; the placeholder id is negative
            if request.conditioning is None:
                rows.append(text)
                continue
            p = int(where[0])
            visual = request.conditioning.visual_tokens.to(device=device, dtype=text.dtype)
            rows.append(torch.cat([text[:p], visual, text[p + 1 :]]))  # [L + C, h]
        return "inputs_embeds", rows


class VLoRARunner(DesignRunner):
    kind = "vlora"
    supports_merge = True

    def __init__(self, model, max_slots: int) -> None:
        super().__init__(model, max_slots)
        self.slots = DeltaSlots(model, max_slots)

    @property
    def merged(self) -> bool:
        return self.slots.merged

    def prompt_positions(self, request: GenerationRequest) -> int:
        return sum(i != IMAGE_TOKEN_INDEX for i in request.prompt_ids)

    def write(self, slot: int, conditioning: Conditioning | None) -> None:
        self.slots.write(slot, conditioning)

    def move(self, src: int, dst: int) -> None:
        self.slots.move(src, dst)

    def set_rows(self, start: int, stop: int) -> str:
        return self.slots.set_rows(start, stop)

    def merge(self, slot: int) -> None:
        self.slots.merge(slot)

    def unmerge(self) -> None:
        self.slots.unmerge()

    def reset(self) -> None:
        self.slots.unmerge()
        self.slots.clear()

    def prefill_rows(self, requests: list[GenerationRequest]) -> tuple[str, list[torch.Tensor]]:
        """("input_ids", rows [C_i]): the text tokens; the image is in the deltas."""
        device = next(self.llm.parameters()).device
        rows = [
            torch.tensor([i for i in r.prompt_ids if i != IMAGE_TOKEN_INDEX], device=device)
            for r in requests
        ]
        return "input_ids", rows


def make_runner(model, max_slots: int) -> DesignRunner:
    kind = getattr(model, "kind", None)
    if kind == "vlora":
        return VLoRARunner(model, max_slots)
    if kind == "input_space":
        return DesignRunner(model, max_slots)
    raise TypeError(f"cannot serve {type(model).__name__}: expected VLoRAModel or InputSpaceModel")


@torch.no_grad()
def prefill(
    llm, cache: SlotKVCache, slots: list[int], kind: str, rows: list[torch.Tensor], pad_id: int
) -> torch.Tensor:
    """Run new requests' prompts (left-padded together), copy each row's keys/values into its
    cache row; returns the logits of each prompt's last position [n, V]."""
    lengths = [r.shape[0] for r in rows]
    width = max(lengths)
    mask = pad_rows(
        [torch.ones(n, dtype=torch.long, device=rows[0].device) for n in lengths], 0, True
    )
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # [n, P]: positions count real tokens only
    inputs = pad_rows(rows, pad_id if kind == "input_ids" else 0.0, left=True)  # [n, P(, h)]
    out = llm(
        **{kind: inputs},
        attention_mask=mask,
        position_ids=position_ids,
        cache=DynamicCache(config=llm.config),
        use_cache=True,
        logits_to_keep=1,
    )
    for i, (slot, n) in enumerate(zip(slots, lengths, strict=True)):
        layers = [
            (layer.keys[i, :, width - n :], layer.values[i, :, width - n :])  # [kv_heads, n, d]
            for layer in out.cache.layers
        ]
        cache.insert(slot, layers)
    return out.logits[:, -1]  # [n, V]
