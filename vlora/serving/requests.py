"""What the serving engine takes and gives back: one request, its sampling, its outputs.

A request's prompt is token ids that may hold one image placeholder (`IMAGE_TOKEN_INDEX`), plus
the image's *conditioning*, computed once per image by `vlora.serving.conditioning`: VLoRA's W_v
factors, or the baseline's projected visual tokens. Outputs are incremental: every engine step
returns, per request it advanced, the new tokens and the new text since the previous output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from vlora.data.tokenize import IMAGE_TOKEN_INDEX
from vlora.serving.conditioning import Conditioning

FinishReason = Literal["stop", "length", "abort", "error"]


class RequestError(ValueError):
    """A request the engine cannot serve as given (the API answers it with a 4xx); `code` is
    OpenAI's error code for it."""

    def __init__(self, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self):  # keeps `code` across processes (Ray re-raises it in the caller)
        return (type(self), (str(self), self.code))


@dataclass(frozen=True)
class SamplingParams:
    """How one request is decoded. `temperature == 0` is greedy (top_p and seed unused)."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # generate exactly max_tokens (load tests use it for fixed lengths)

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise RequestError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise RequestError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not (0 < self.top_p <= 1):
            raise RequestError(f"top_p must be in (0, 1], got {self.top_p}")
        if any(not s for s in self.stop):
            raise RequestError("stop strings must not be empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class GenerationRequest:
    request_id: str
    prompt_ids: list[int]  # token ids; at most one IMAGE_TOKEN_INDEX, where the image goes
    sampling: SamplingParams
    conditioning: Conditioning | None = None  # the image's factors / visual tokens

    def __post_init__(self) -> None:
        placeholders = sum(i == IMAGE_TOKEN_INDEX for i in self.prompt_ids)
        if placeholders > 1:
            raise RequestError(f"the prompt holds {placeholders} images; this model takes one")
        if placeholders and self.conditioning is None:
            raise RequestError("the prompt has an image placeholder but no image was given")
        if not placeholders and self.conditioning is not None:
            raise RequestError("an image was given but the prompt has no image placeholder")
        if not any(i != IMAGE_TOKEN_INDEX for i in self.prompt_ids):
            raise RequestError("the prompt holds no text token")

    @property
    def has_image(self) -> bool:
        return self.conditioning is not None


@dataclass
class RequestOutput:
    """What one step produced for one request (incremental), and its running counts."""

    request_id: str
    text: str  # new text since the previous output (stop strings and held-back text excluded)
    token_ids: list[int]  # new tokens since the previous output
    prompt_tokens: int  # positions the LLM read for the prompt (the baseline's L visual included)
    completion_tokens: int  # generated so far
    finished: bool = False
    finish_reason: FinishReason | None = None
    error: str | None = None
    delta_path: str = ""  # "factorised", "merged" or "none" (text only / baseline), last step


@dataclass
class CompletedRequest:
    """A finished request, outputs joined (`GenerationEngine.generate`)."""

    request_id: str
    text: str
    token_ids: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: FinishReason | None = None
    error: str | None = None
    delta_paths: set[str] = field(default_factory=set)

    def add(self, output: RequestOutput) -> None:
        self.text += output.text
        self.token_ids.extend(output.token_ids)
        self.prompt_tokens = output.prompt_tokens
        self.completion_tokens = output.completion_tokens
        if output.delta_path:
            self.delta_paths.add(output.delta_path)
        if output.finished:
            self.finish_reason, self.error = output.finish_reason, output.error
