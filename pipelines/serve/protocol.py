"""The OpenAI chat-completions request, validated, and turned into a `ChatJob` for the model.

Accepted: `model`, `messages` (system / developer, user, assistant; content a string or a list
of `text` and `image_url` parts), `max_tokens` (or `max_completion_tokens`), `temperature`,
`top_p`, `stop`, `seed`, `stream`, `stream_options` (`include_usage`, and vLLM's
`continuous_usage_stats`: usage on every chunk, a chunk per generated token), `user`; `n`,
`presence_penalty`, `frequency_penalty` and `logprobs` only at their defaults; `ignore_eos`
(vLLM's extension: generate exactly max_tokens, for load tests). Anything else is a 400 naming
the field, as OpenAI does, instead of being silently ignored.

An image part becomes the model's image token at its place in the message (parts are joined by
newlines, so `[image, "What is it?"]` reads `<image>\\nWhat is it?`, LLaVA's convention and the
eval stage's prompt).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.serve.config import APISettings
from pipelines.serve.errors import APIError, bad_request
from pipelines.serve.images import check_image, decode_data_url, fetch_image_url
from vlora.serving.chat import ChatTurn
from vlora.serving.conditioning import image_digest
from vlora.serving.requests import RequestError, SamplingParams

MAX_STOP_STRINGS = 4


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageURL(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(_Strict):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(_Strict):
    include_usage: bool = False
    continuous_usage_stats: bool = False  # vLLM's: usage on every chunk, one chunk per token


class ChatCompletionRequest(_Strict):
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    user: str | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    ignore_eos: bool = False


@dataclass
class ChatJob:
    """A validated request, ready for the model (picklable: it crosses Ray deployments)."""

    request_id: str
    model: str
    turns: list[ChatTurn]
    sampling: SamplingParams
    image: bytes | None = None
    image_sha256: str | None = None
    stream: bool = False
    include_usage: bool = False
    continuous_usage: bool = False
    max_tokens_given: bool = True


@dataclass(frozen=True)
class ModelCard:
    """What the API needs to know about the served model (the generation side sends it)."""

    id: str
    design: str
    version: str
    image_token: str
    max_images: int
    context_length: int
    created: int


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_body(body: bytes) -> ChatCompletionRequest:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise bad_request(
            f"the request body is not valid JSON ({err})", None, "invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object", None, "invalid_json")
    if data.get("messages") == []:
        raise bad_request("messages: at least one message is required", "messages", "empty")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = _loc(tuple(p for p in first["loc"] if not str(p).startswith(("str", "list["))))
        kind = first["type"]
        message = (
            f"{where}: unknown field (not supported by this server)"
            if kind == "extra_forbidden"
            else f"{where}: {first['msg']}"
        )
        code = "unsupported_parameter" if kind == "extra_forbidden" else "invalid_value"
        raise bad_request(message, where or None, code) from None


def _sampling(request: ChatCompletionRequest, settings: APISettings, card: ModelCard):
    for field, default in (("n", 1), ("presence_penalty", 0.0), ("frequency_penalty", 0.0)):
        if getattr(request, field) != default:
            raise bad_request(f"{field}: only {default} is supported", field, "unsupported_value")
    if request.logprobs:
        raise bad_request("logprobs: not supported", "logprobs", "unsupported_value")
    given = request.max_completion_tokens if request.max_tokens is None else request.max_tokens
    param = "max_tokens" if request.max_tokens is not None else "max_completion_tokens"
    if given is not None and not 1 <= given <= settings.max_tokens_limit:
        raise bad_request(
            f"{param}: {given} is out of range; use 1 to {settings.max_tokens_limit}", param
        )
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if len(stop) > MAX_STOP_STRINGS or any(not s for s in stop):
        raise bad_request(
            f"stop: up to {MAX_STOP_STRINGS} non-empty strings", "stop", "invalid_value"
        )
    try:
        sampling = SamplingParams(
            max_tokens=given or settings.default_max_tokens,
            temperature=(
                settings.default_temperature if request.temperature is None else request.temperature
            ),
            top_p=1.0 if request.top_p is None else request.top_p,
            seed=request.seed,
            stop=tuple(stop),
            ignore_eos=request.ignore_eos,
        )
    except RequestError as err:
        raise bad_request(str(err)) from None
    return sampling, given is not None


async def prepare_job(
    request: ChatCompletionRequest, settings: APISettings, card: ModelCard
) -> ChatJob:
    """Validate everything that needs no model: model id, parameters, images."""
    if request.model != card.id:
        raise APIError(
            404,
            f"model '{request.model}' is not served here; this server serves '{card.id}'",
            param="model",
            code="model_not_found",
        )
    sampling, given = _sampling(request, settings, card)
    turns: list[ChatTurn] = []
    images: list[tuple[bytes, str]] = []
    for m, message in enumerate(request.messages):
        role = "system" if message.role == "developer" else message.role
        parts = message.content if isinstance(message.content, list) else None
        if parts is None:
            if message.content is None:
                raise bad_request(f"messages[{m}].content: required", f"messages[{m}].content")
            if card.image_token in message.content:
                raise bad_request(
                    f"messages[{m}].content: holds '{card.image_token}', the image placeholder; "
                    "send images as image_url parts",
                    f"messages[{m}].content",
                )
            turns.append(ChatTurn(role, message.content))
            continue
        pieces: list[str] = []
        for p, part in enumerate(parts):
            param = f"messages[{m}].content[{p}]"
            if part.type == "text":
                if part.text is None:
                    raise bad_request(f"{param}.text: required for a text part", f"{param}.text")
                if card.image_token in part.text:
                    raise bad_request(
                        f"{param}.text: holds '{card.image_token}', the image placeholder; send "
                        "images as image_url parts",
                        f"{param}.text",
                    )
                pieces.append(part.text)
                continue
            if part.image_url is None:
                raise bad_request(f"{param}.image_url: required", f"{param}.image_url")
            if role != "user":
                raise bad_request(f"{param}: images belong in user messages", param)
            url = part.image_url.url
            where = f"{param}.image_url.url"
            if url.startswith("data:"):
                data = decode_data_url(url, settings, where)
            elif url.startswith(("http://", "https://")):
                data = await fetch_image_url(url, settings, where)
            else:
                raise bad_request(
                    "image_url: expected a data: URL (or http(s) when enabled)",
                    where,
                    "invalid_image_url",
                )
            check_image(data, settings, where)
            images.append((data, where))
            pieces.append(card.image_token)
        turns.append(ChatTurn(role, "\n".join(pieces)))
    distinct = list(dict.fromkeys(image_digest(data) for data, _ in images))
    if len(distinct) > card.max_images:
        raise bad_request(
            f"the messages hold {len(distinct)} different images; this model takes "
            f"{card.max_images} per request",
            images[-1][1],
            "too_many_images",
        )
    image = images[0][0] if images else None
    if len(images) > len(distinct):  # the same image more than once: the first one counts
        turns = _keep_first_image(turns, card.image_token)
    return ChatJob(
        request_id=f"chatcmpl-{uuid.uuid4().hex}",
        model=card.id,
        turns=turns,
        sampling=sampling,
        image=image,
        image_sha256=image_digest(image) if image is not None else None,
        stream=request.stream,
        include_usage=bool(request.stream_options and request.stream_options.include_usage),
        continuous_usage=bool(
            request.stream_options and request.stream_options.continuous_usage_stats
        ),
        max_tokens_given=given,
    )


def _keep_first_image(turns: list[ChatTurn], token: str) -> list[ChatTurn]:
    """Later copies of the one image are dropped with the newline that follows them."""
    seen, out = False, []
    for turn in turns:
        first, *rest = turn.text.split(token)
        text = first
        for piece in rest:
            text += piece.removeprefix("\n") if seen else token + piece
            seen = True
        out.append(ChatTurn(turn.role, text))
    return out
