"""The OpenAI-compatible HTTP API over a serving backend (Ray Serve deployments or in-process).

Routes: `POST /v1/chat/completions` (JSON or server-sent events), `GET /v1/models`,
`GET /v1/models/{id}`, `GET /stats` (engine and conditioning-cache counters), and `GET /health`
(no key needed: load balancers probe it). With an API key, every other route needs
`Authorization: Bearer KEY` (401 otherwise).

A request is answered only after the generation side accepted it (prompt built, context
checked), so every client mistake is a 4xx with OpenAI's error JSON before any stream starts;
a failure after that ends a stream with an error event and `data: [DONE]`. Every request has a
deadline (`api.request_timeout_s`): past it the generation is cancelled and the answer is 504.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.serve.chat_server import Accepted, ChatServer
from pipelines.serve.config import APISettings
from pipelines.serve.errors import APIError
from pipelines.serve.protocol import ChatJob, ModelCard, parse_body, prepare_job
from vlora.serving import EngineDeadError, EngineOverloadedError, RequestError, RequestOutput

logger = logging.getLogger(__name__)


class BackendUnavailableError(RuntimeError):
    """The generation side cannot be reached (a replica died, none is up yet)."""


class ServingBackend(Protocol):
    async def card(self) -> ModelCard: ...

    def stream(self, job: ChatJob) -> AsyncIterator[Accepted | RequestOutput]: ...

    async def stats(self) -> dict[str, Any]: ...


class InProcessBackend:
    """A `ChatServer` in this process (tests, `--backend inprocess`, the benchmark's baseline)."""

    def __init__(self, server: ChatServer) -> None:
        self.server = server

    async def card(self) -> ModelCard:
        return self.server.card

    def stream(self, job: ChatJob) -> AsyncIterator[Accepted | RequestOutput]:
        return self.server.stream(job)

    async def stats(self) -> dict[str, Any]:
        return {"generation": self.server.stats()}


def _cause(err: BaseException) -> BaseException:
    """Ray re-raises a replica's exception wrapped (an instance of both); its cause reads better."""
    return getattr(err, "cause", None) or err


def to_api_error(err: BaseException) -> APIError:
    cause = _cause(err)
    if isinstance(err, APIError):
        return err
    if isinstance(err, RequestError):
        return APIError(400, str(cause), code=getattr(cause, "code", "invalid_value"))
    if isinstance(err, EngineOverloadedError):
        return APIError(503, f"the server is busy: {cause}; retry later", code="overloaded")
    if isinstance(err, BackendUnavailableError | EngineDeadError):
        return APIError(503, f"generation is unavailable: {cause}", code="unavailable")
    if isinstance(err, TimeoutError):
        return APIError(504, str(err) or "the request timed out", code="timeout")
    logger.error("request failed: %r", err)
    return APIError(500, f"generation failed: {type(cause).__name__}: {cause}", code="internal")


def error_response(err: BaseException) -> JSONResponse:
    api_error = to_api_error(err)
    headers = {"WWW-Authenticate": "Bearer"} if api_error.status == 401 else None
    return JSONResponse(api_error.body(), status_code=api_error.status, headers=headers)


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    async def next(self, events: AsyncIterator[Any]) -> Any:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the request took longer than {self.seconds:g} s")
        try:
            async with asyncio.timeout(left):
                return await anext(events)
        except TimeoutError:
            raise TimeoutError(f"the request took longer than {self.seconds:g} s") from None


def _chunk(
    job: ChatJob,
    created: int,
    delta: dict,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
) -> str:
    body: dict[str, Any] = {
        "id": job.request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": job.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n"


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


def create_app(backend: ServingBackend, settings: APISettings) -> FastAPI:
    app = FastAPI(title="VLoRA OpenAI-compatible API", docs_url=None, redoc_url=None)
    api_key = settings.api_key or (
        os.environ.get(settings.api_key_env) if settings.api_key_env else None
    )
    if settings.api_key_env and not api_key:
        raise ValueError(f"api.api_key_env: ${settings.api_key_env} is not set")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "no such route" if exc.status_code == 404 else str(exc.detail)
        return error_response(
            APIError(exc.status_code, f"{request.method} {request.url.path}: {message}")
        )

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), api_key):
            raise APIError(
                401, "missing or wrong API key (Authorization: Bearer KEY)", code="invalid_api_key"
            )

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        limit = settings.max_request_bytes
        too_large = APIError(
            413, f"the request body is larger than {limit:,} bytes", code="request_too_large"
        )
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
        return bytes(body)

    @app.get("/health")
    async def health() -> JSONResponse:
        try:
            async with asyncio.timeout(10):
                card = await backend.card()
        except Exception as err:
            return error_response(BackendUnavailableError(f"{type(err).__name__}: {_cause(err)}"))
        return JSONResponse(
            {"status": "ok", "model": card.id, "design": card.design, "version": card.version}
        )

    async def card() -> ModelCard:
        try:
            async with asyncio.timeout(30):
                return await backend.card()
        except APIError:
            raise
        except Exception as err:
            raise BackendUnavailableError(f"{type(err).__name__}: {_cause(err)}") from None

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        authorize(request)
        try:
            return JSONResponse({"object": "list", "data": [_model_entry(await card())]})
        except BackendUnavailableError as err:
            return error_response(err)

    @app.get("/v1/models/{model_id:path}")
    async def model(request: Request, model_id: str) -> JSONResponse:
        authorize(request)
        try:
            served = await card()
        except BackendUnavailableError as err:
            return error_response(err)
        if model_id != served.id:
            raise APIError(
                404, f"model '{model_id}' is not served here", param="model", code="model_not_found"
            )
        return JSONResponse(_model_entry(served))

    @app.get("/stats")
    async def stats(request: Request) -> JSONResponse:
        authorize(request)
        try:
            return JSONResponse(await backend.stats())
        except Exception as err:
            return error_response(err)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            return await _chat_completions(request)
        except Exception as err:  # every failure is OpenAI error JSON, never a bare 500
            return error_response(err)

    async def _chat_completions(request: Request):
        authorize(request)
        chat = parse_body(await read_body(request))
        job = await prepare_job(chat, settings, await card())
        deadline = _Deadline(settings.request_timeout_s)
        events = backend.stream(job)
        try:
            accepted = await deadline.next(events)  # errors in the request surface here: 4xx
        except BaseException:
            await events.aclose()
            raise
        assert isinstance(accepted, Accepted)
        if job.stream:
            return StreamingResponse(
                _sse(job, accepted, events, deadline),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await _complete(job, accepted, events, deadline)

    return app


def _model_entry(card: ModelCard) -> dict[str, Any]:
    return {
        "id": card.id,
        "object": "model",
        "created": card.created,
        "owned_by": "vlora",
        "design": card.design,
        "version": card.version,
        "context_length": card.context_length,
        "max_images_per_request": card.max_images,
    }


async def _complete(job: ChatJob, accepted: Accepted, events, deadline: _Deadline) -> JSONResponse:
    text, completion, reason = "", 0, None
    try:
        while True:
            output = await deadline.next(events)
            text += output.text
            completion = output.completion_tokens
            if output.finished:
                reason = output.finish_reason
                break
    finally:
        await events.aclose()
    return JSONResponse(
        {
            "id": job.request_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": job.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": _finish(reason),
                }
            ],
            "usage": _usage(accepted.prompt_tokens, completion),
        }
    )


async def _sse(job: ChatJob, accepted: Accepted, events, deadline: _Deadline) -> AsyncIterator[str]:
    created = int(time.time())
    completion = 0
    try:
        yield _chunk(job, created, {"role": "assistant", "content": ""})
        while True:
            output = await deadline.next(events)
            completion = output.completion_tokens
            usage = _usage(accepted.prompt_tokens, completion) if job.continuous_usage else None
            if output.text or (usage and output.token_ids):  # with usage: a chunk per token
                yield _chunk(job, created, {"content": output.text}, usage=usage)
            if output.finished:
                yield _chunk(job, created, {}, _finish(output.finish_reason), usage=usage)
                break
        if job.include_usage:
            body = {
                "id": job.request_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": job.model,
                "choices": [],
                "usage": _usage(accepted.prompt_tokens, completion),
            }
            yield f"data: {json.dumps(body)}\n\n"
    except Exception as err:  # the stream has started: the error goes in it
        yield f"data: {json.dumps(to_api_error(err).body())}\n\n"
    finally:
        await events.aclose()
    yield "data: [DONE]\n\n"
