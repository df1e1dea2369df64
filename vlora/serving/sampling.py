"""Next-token choice per row: greedy, or temperature + nucleus (top_p) sampling with a seed.

Each sampled request owns a `torch.Generator`, seeded from its `seed` (or at random), and draws
from its own row only, so what a seeded request samples does not depend on which other requests
share its batch (up to the float rounding of the logits themselves).
"""

from __future__ import annotations

import secrets

import torch

from vlora.serving.requests import SamplingParams


def request_generator(params: SamplingParams) -> torch.Generator | None:
    """The request's own RNG (CPU), or None for greedy decoding."""
    if params.greedy:
        return None
    generator = torch.Generator(device="cpu")
    generator.manual_seed(params.seed if params.seed is not None else secrets.randbits(63))
    return generator


def nucleus_probabilities(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """[V] logits → [V] probabilities after temperature and top-p (the smallest set of tokens
    whose probability reaches top_p; the most likely token is always kept)."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # [V]
    if top_p >= 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, descending=True)  # [V]
    before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of the tokens ranked above
    sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)
    kept = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return kept / kept.sum()


def choose_tokens(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator | None],
) -> list[int]:
    """logits [B, V] (one row per request) → the next token of each row."""
    greedy = logits.argmax(dim=-1).tolist()  # [B]
    tokens = []
    for row, (p, generator) in enumerate(zip(params, generators, strict=True)):
        if p.greedy or generator is None:
            tokens.append(int(greedy[row]))
            continue
        probs = nucleus_probabilities(logits[row].cpu(), p.temperature, p.top_p)  # [V]
        tokens.append(int(torch.multinomial(probs, 1, generator=generator)))
    return tokens
