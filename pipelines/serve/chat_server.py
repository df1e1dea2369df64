"""The generation side of the server: chat → prompt ids, image → conditioning, the engine.

`ChatServer` is what runs inside the Ray Serve generation deployment, and in-process for the
tests and `--backend inprocess`. For each `ChatJob` it

1. tokenises the conversation in the model's template (`vlora.serving.chat`);
2. looks the image's conditioning up by (content hash, model version) in its cache, on its own
   device, or asks `encode` for it (the encoder deployment, or a local `ImageConditioner`);
   concurrent requests for one image wait for the same computation;
3. checks the request against the context (a RequestError is a 400 for the API), yields
   `Accepted` with the prompt's size, then the engine's incremental outputs.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from PIL import Image

from pipelines.serve.model_source import ResolvedModel
from pipelines.serve.protocol import ChatJob, ModelCard
from vlora.serving import (
    AsyncEngine,
    CacheKey,
    Conditioning,
    ConditioningCache,
    EngineConfig,
    GenerationEngine,
    GenerationRequest,
    ImageConditioner,
    RequestError,
    RequestOutput,
)
from vlora.serving.chat import encode_chat

Encode = Callable[[str, bytes], Awaitable[Conditioning]]
MAX_IMAGES = 1  # one image per request: VLoRA turns one image into one set of deltas


@dataclass(frozen=True)
class Accepted:
    """The request passed every check and is queued: the API can start answering."""

    request_id: str
    prompt_tokens: int


def decode_image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


class LocalEncoder:
    """Images → conditioning in this process, one batch at a time (no cross-request batching;
    the Ray Serve encoder deployment batches)."""

    def __init__(self, model) -> None:
        self.conditioner = ImageConditioner(model)
        self._lock = asyncio.Lock()

    async def __call__(self, sha256: str, data: bytes) -> Conditioning:
        async with self._lock:
            image = decode_image(data)
            (conditioning,) = await asyncio.to_thread(self.conditioner.encode, [image])
            return conditioning


class ChatServer:
    def __init__(
        self,
        model,
        resolved: ResolvedModel,
        engine_config: EngineConfig,
        cache_bytes: int,
        encode: Encode | None = None,
    ) -> None:
        self.model = model
        self.resolved = resolved
        self.tokenizer = model.tokenizer
        self.template = model.config.template
        self.image_token = model.config.image_token
        self.engine = AsyncEngine(GenerationEngine(model, engine_config))
        self.cache = ConditioningCache(cache_bytes)
        self.encode = encode or LocalEncoder(model)
        self._inflight: dict[CacheKey, asyncio.Future] = {}
        self.device = self.engine.engine.device
        self.card = ModelCard(
            id=resolved.served_name,
            design=resolved.design,
            version=resolved.version,
            image_token=self.image_token,
            max_images=MAX_IMAGES,
            context_length=self.engine.engine.context_length,
            created=int(time.time()),
        )

    async def conditioning(self, sha256: str, data: bytes) -> Conditioning:
        key = CacheKey(sha256, self.resolved.conditioning_version)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            conditioning = (await self.encode(sha256, data)).to(self.device)
            self.cache.put(key, conditioning)
            future.set_result(conditioning)
            return conditioning
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            self._inflight.pop(key, None)

    def build_request(self, job: ChatJob, conditioning: Conditioning | None) -> GenerationRequest:
        ids = encode_chat(self.tokenizer, self.template, job.turns, self.image_token)
        request = GenerationRequest(job.request_id, ids, job.sampling, conditioning)
        engine = self.engine.engine
        positions = engine.prompt_positions(request)
        if positions >= engine.context_length:
            raise RequestError(
                f"the prompt is {positions} tokens; this model's context is "
                f"{engine.context_length}",
                code="context_length_exceeded",
            )
        if not job.max_tokens_given:  # the default budget shrinks to what the context leaves
            room = engine.context_length - positions
            request.sampling = replace(job.sampling, max_tokens=min(job.sampling.max_tokens, room))
        engine.check(request)
        return request

    async def stream(self, job: ChatJob) -> AsyncIterator[Accepted | RequestOutput]:
        conditioning = None
        if job.image is not None:
            conditioning = await self.conditioning(job.image_sha256 or "", job.image)
        request = self.build_request(job, conditioning)
        yield Accepted(job.request_id, self.engine.engine.prompt_positions(request))
        async for output in self.engine.generate(request):
            yield output

    def stats(self) -> dict[str, Any]:
        return {
            "model": self.card.id,
            "version": self.card.version,
            "engine": self.engine.stats(),
            "conditioning_cache": self.cache.stats(),
            "device": str(self.device),
            "torch_threads": torch.get_num_threads(),
        }

    def shutdown(self) -> None:
        self.engine.shutdown()
