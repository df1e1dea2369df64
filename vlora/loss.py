"""Next-token loss computed on the supervised positions only: the training fast path.

The plain path (`llm(..., labels=labels)`) projects every position to the vocabulary: [B, T, V]
logits (V = 49,152 for SmolLM2, a fifth of its weights) and a log-softmax over all of them,
although SFT supervises only the answers (about a quarter of the tokens of a VQA conversation)
and the input-space baseline never supervises its L visual positions. This path runs the
decoder, keeps the hidden states whose *next* token is labelled and applies the LM head to
those alone. The loss is the plain path's (transformers' causal-LM loss: mean over labelled
tokens), and so are the gradients; tests check both against the plain path.

The returned `logits` hold the kept positions only, [n, V] in row-major (batch, position)
order, which is why it is opt-in (`logits_for="labelled"` on the models' forward).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from vlora.data.tokenize import IGNORE_INDEX

LogitsFor = Literal["all", "labelled"]
LOGITS_FOR: tuple[str, ...] = ("all", "labelled")


def check_logits_for(logits_for: str, labels: torch.Tensor | None) -> None:
    if logits_for not in LOGITS_FOR:
        raise ValueError(f"logits_for must be one of {', '.join(LOGITS_FOR)}, got '{logits_for}'")
    if logits_for == "labelled" and labels is None:
        raise ValueError("logits_for='labelled' needs labels")


def causal_lm_output(
    llm: PreTrainedModel,
    labels: torch.Tensor | None,
    logits_for: LogitsFor,
    **decoder_inputs: Any,
) -> CausalLMOutputWithPast:
    """The models' last step: the plain path (`llm(..., labels=labels)`) or the labelled one."""
    if logits_for == "labelled":
        assert labels is not None  # check_logits_for, called before any work
        return labelled_positions_loss(llm, labels, **decoder_inputs)
    return llm(**decoder_inputs, labels=labels)


def labelled_positions_loss(
    llm: PreTrainedModel, labels: torch.Tensor, **decoder_inputs: Any
) -> CausalLMOutputWithPast:
    """The causal-LM loss of `llm` with logits only where the next token is labelled.

    `decoder_inputs` are the decoder's own arguments (input_ids or inputs_embeds,
    attention_mask, ...); `labels` [B, T] are aligned with the inputs, as for the plain path.
    """
    decoder = llm.get_decoder()
    hidden = decoder(**{"use_cache": False, **decoder_inputs}).last_hidden_state  # [B, T, h]
    next_labels = labels[:, 1:].to(hidden.device)  # [B, T-1]: the token each position predicts
    keep = next_labels != IGNORE_INDEX  # [B, T-1]
    kept_hidden = hidden[:, :-1][keep]  # [n, h]
    logits = llm.get_output_embeddings()(kept_hidden)  # [n, V]
    softcap = getattr(llm.config, "final_logit_softcapping", None)
    if softcap:  # Gemma-2 caps its logits before the loss
        logits = torch.tanh(logits / softcap) * softcap
    targets = next_labels[keep]  # [n]
    if targets.numel() == 0:
        # No supervised token: the plain path's mean over nothing is NaN, which would reach the
        # weights through the optimizer; a zero loss connected to the graph trains nothing.
        loss = hidden.sum() * 0.0
    else:
        loss = F.cross_entropy(logits.float(), targets, reduction="mean")
    return CausalLMOutputWithPast(loss=loss, logits=logits)
