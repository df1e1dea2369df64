"""The three Ray Serve deployments, where the work differs:

- `ImageEncoder`: vision encoder + generator (VLoRA: images → W_v factors) or projector
  (baseline: images → visual tokens), batched across requests with `@serve.batch`, with its own
  conditioning cache. Holds no LLM.
- `Generator`: the generation engine (`vlora.serving`): iteration-level batching, each request's
  factors on its rows, the merged path for a lone request; a per-replica conditioning cache on
  its device (a hit skips the encoder and the transfer). Streams `RequestOutput`s.
- `OpenAIIngress`: the HTTP API (`pipelines.serve.api`) over a handle to `Generator`.

A replica's constructor takes the settings as a plain dict (what a Serve config's `args` hold)
and the handles of the deployments it calls. When a generation replica dies under a request,
the ingress resends the request once (`api.retries_on_replica_failure`) if nothing was sent to
the client yet, and otherwise fails it with a 503 / an error event: it never hangs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.handle import DeploymentHandle

from pipelines.serve.api import BackendUnavailableError, create_app
from pipelines.serve.chat_server import Accepted, ChatServer, decode_image
from pipelines.serve.config import DeploymentSettings, ServeSettings
from pipelines.serve.model_source import ResolvedModel, load_model
from pipelines.serve.protocol import ChatJob, ModelCard
from vlora.serving import CacheKey, Conditioning, ConditioningCache, ImageConditioner, RequestOutput
from vlora.serving.conditioning import release_image_modules

logger = logging.getLogger(__name__)

REPLICA_FAILURES = (ActorDiedError, ActorUnavailableError, RayActorError)


def _replica_setup(section: DeploymentSettings) -> None:
    import torch

    from vlora.utils.env import apply_offline_defaults

    apply_offline_defaults()
    threads = section.torch_threads or max(1, math.ceil(section.num_cpus))
    torch.set_num_threads(threads)


@serve.deployment(name="ImageEncoder")
class ImageEncoder:
    def __init__(self, settings: dict[str, Any], resolved: dict[str, Any]) -> None:
        self.settings = ServeSettings.model_validate(settings)
        _replica_setup(self.settings.encoder)
        self.resolved = ResolvedModel(**resolved)
        model = load_model(self.resolved, self.settings.model)
        self.conditioner = ImageConditioner(model)  # vision + bridge; the LLM goes with `model`
        del model
        section = self.settings.encoder
        self.cache = ConditioningCache(int(section.cache_mb * 2**20))
        self.encode_batch.set_max_batch_size(section.max_batch_size)
        self.encode_batch.set_batch_wait_timeout_s(section.batch_wait_timeout_s)
        self.batches: list[int] = []

    async def encode(self, sha256: str, data: bytes) -> Conditioning:
        key = CacheKey(sha256, self.resolved.conditioning_version)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        conditioning = await self.encode_batch(data)
        self.cache.put(key, conditioning)
        return conditioning

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def encode_batch(self, images: list[bytes]) -> list[Conditioning]:
        decoded = [decode_image(data) for data in images]
        self.batches.append(len(images))
        encoded = await asyncio.to_thread(self.conditioner.encode, decoded)
        return [c.to("cpu") for c in encoded]  # they travel to another process

    def stats(self) -> dict[str, Any]:
        sizes = self.batches
        return {
            "pid": os.getpid(),
            "conditioning_cache": self.cache.stats(),
            "batches": len(sizes),
            "mean_batch_size": round(sum(sizes) / len(sizes), 3) if sizes else None,
        }


@serve.deployment(name="Generator")
class Generator:
    def __init__(
        self, settings: dict[str, Any], resolved: dict[str, Any], encoder: DeploymentHandle
    ) -> None:
        self.settings = ServeSettings.model_validate(settings)
        _replica_setup(self.settings.llm)
        self.resolved = ResolvedModel(**resolved)
        self.encoder = encoder
        model = load_model(self.resolved, self.settings.model)
        self.released_bytes = release_image_modules(model)  # the encoder deployment has them
        llm = self.settings.llm
        self.server = ChatServer(
            model, self.resolved, llm.engine, int(llm.cache_mb * 2**20), encode=self._encode
        )

    async def _encode(self, sha256: str, data: bytes) -> Conditioning:
        return await self.encoder.encode.remote(sha256, data)

    async def stream(self, job: ChatJob) -> AsyncIterator[Accepted | RequestOutput]:
        async for event in self.server.stream(job):
            yield event

    def card(self) -> ModelCard:
        return self.server.card

    def stats(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "released_bytes": self.released_bytes, **self.server.stats()}

    def check_health(self) -> None:
        if not self.server.engine.alive:
            raise RuntimeError(f"the generation engine is down ({self.server.engine.last_error})")

    def __del__(self) -> None:
        server = getattr(self, "server", None)
        if server is not None:
            server.shutdown()


class RayBackend:
    """The ingress's view of the `Generator` deployment (see the module docstring)."""

    def __init__(
        self, generator: DeploymentHandle, encoder: DeploymentHandle, retries: int
    ) -> None:
        self.generator = generator
        self.encoder = encoder
        self.retries = retries
        self._card: ModelCard | None = None
        self.replica_failures = 0
        self.retried = 0

    async def card(self) -> ModelCard:
        if self._card is None:
            self._card = await self.generator.card.remote()
        return self._card

    async def stream(self, job: ChatJob) -> AsyncIterator[Accepted | RequestOutput]:
        attempt = 0
        while True:
            started = False
            response = self.generator.options(stream=True).stream.remote(job)
            try:
                async for event in response:
                    if isinstance(event, RequestOutput) and (event.text or event.token_ids):
                        started = True  # tokens reached the client: a retry would repeat them
                    yield event
                return
            except REPLICA_FAILURES as err:
                self.replica_failures += 1
                if started or attempt >= self.retries:
                    raise BackendUnavailableError(
                        f"the generation replica serving this request died ({type(err).__name__})"
                    ) from None
                attempt += 1
                self.retried += 1
                logger.warning("generation replica died before the first token; resending")
            finally:
                response.cancel()  # the client went away or the stream ended: stop generating

    async def stats(self) -> dict[str, Any]:
        generation, encoder = await asyncio.gather(
            self.generator.stats.remote(), self.encoder.stats.remote()
        )
        return {
            "generation": generation,
            "encoder": encoder,
            "ingress": {"replica_failures": self.replica_failures, "retried": self.retried},
        }


@serve.deployment(name="OpenAIIngress")
@serve.ingress()
class OpenAIIngress:
    def __init__(
        self, settings: dict[str, Any], generator: DeploymentHandle, encoder: DeploymentHandle
    ) -> None:
        self.settings = ServeSettings.model_validate(settings)
        from vlora.utils.env import apply_offline_defaults

        apply_offline_defaults()
        self.backend = RayBackend(generator, encoder, self.settings.api.retries_on_replica_failure)

    def __serve_build_asgi_app__(self):
        return create_app(self.backend, self.settings.api)
