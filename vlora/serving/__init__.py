"""Serving VLoRA and the input-space baseline: batched generation with per-request deltas.

- `GenerationEngine` (`engine`): iteration-level batching; each request's image as factorised
  W_v rows (`delta_slots`) or merged for a lone request; the baseline's visual tokens spliced at
  prefill (`designs`); a row-per-request KV cache (`kv_cache`); sampling and stop strings.
- `AsyncEngine` (`async_engine`): the engine on its own thread, for asyncio servers.
- `ImageConditioner` (`conditioning`): images → factors / visual tokens, batched;
  `ConditioningCache` keys them by image content hash and model version.

The HTTP API and the Ray Serve deployments live in `pipelines.serve`; this package imports
torch and transformers only.
"""

from vlora.serving.async_engine import AsyncEngine, EngineDeadError
from vlora.serving.conditioning import Conditioning, ImageConditioner, image_digest
from vlora.serving.conditioning_cache import CacheKey, ConditioningCache
from vlora.serving.engine import GenerationEngine
from vlora.serving.engine_config import EngineConfig, EngineOverloadedError, EngineStats
from vlora.serving.requests import (
    CompletedRequest,
    GenerationRequest,
    RequestError,
    RequestOutput,
    SamplingParams,
)

__all__ = [
    "AsyncEngine",
    "CacheKey",
    "CompletedRequest",
    "Conditioning",
    "ConditioningCache",
    "EngineConfig",
    "EngineDeadError",
    "EngineOverloadedError",
    "EngineStats",
    "GenerationEngine",
    "GenerationRequest",
    "ImageConditioner",
    "RequestError",
    "RequestOutput",
    "SamplingParams",
    "image_digest",
]
