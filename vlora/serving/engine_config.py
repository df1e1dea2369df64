"""The engine's settings, its counters, and the overload error.

`EngineStats` keeps what a results file needs to say where the time went: prefill and decode
seconds, and decode steps and their mean duration by batch size.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EngineOverloadedError(RuntimeError):
    """The waiting queue is full (the API answers 503 and the client retries later)."""


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(
        default=8, ge=1, description="Requests decoded together (rows of the KV cache)."
    )
    max_prefill_tokens: int = Field(
        default=4096,
        ge=1,
        description="Prompt positions prefilled in one step (the first waiting request is "
        "always admitted); bounds how long one prefill delays the running requests.",
    )
    max_waiting: int = Field(
        default=256, ge=0, description="Requests queued beyond the batch; more are refused."
    )
    merge_lone_requests: bool = Field(
        default=True,
        description="VLoRA: merge a lone request's deltas into the weights when its remaining "
        "tokens reach vlora.model.MERGE_MIN_NEW_TOKENS(_BY_DEVICE).",
    )
    kv_initial_capacity: int = Field(
        default=256, ge=8, description="KV cache columns allocated at start (doubled as needed)."
    )


@dataclass
class EngineStats:
    prefill_steps: int = 0
    decode_steps: int = 0
    merged_decode_steps: int = 0
    prefill_seconds: float = 0.0
    prefill_positions: int = 0
    generated_tokens: int = 0
    finished: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # batch size → [steps, seconds]: where decode time goes as the batch grows
    decode_by_batch: dict[int, list[float]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0.0])
    )

    def to_dict(self) -> dict[str, Any]:
        decode_seconds = sum(s for _, s in self.decode_by_batch.values())
        return {
            "prefill_steps": self.prefill_steps,
            "decode_steps": self.decode_steps,
            "merged_decode_steps": self.merged_decode_steps,
            "prefill_seconds": round(self.prefill_seconds, 4),
            "prefill_positions": self.prefill_positions,
            "decode_seconds": round(decode_seconds, 4),
            "generated_tokens": self.generated_tokens,
            "finished": dict(self.finished),
            "decode_ms_per_step_by_batch": {
                str(b): round(1000 * s / n, 2) for b, (n, s) in sorted(self.decode_by_batch.items())
            },
            "decode_steps_by_batch": {
                str(b): int(n) for b, (n, _) in sorted(self.decode_by_batch.items())
            },
        }
