"""The OpenAI-compatible API over the in-process backend: answers, streaming, every bad input,
keys, image URLs, the factor cache. Same code as behind Ray Serve, minus Ray."""

from __future__ import annotations

import asyncio
import base64
import http.server
import io
import json
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.pipelines.serve.conftest import app_for, data_url, image_message
from vlora.eval.generate_fn import BatchGenerator

MODEL = "tiny-vlora"


def ask(client: TestClient, messages, **params):
    body = {"model": MODEL, "messages": messages, "temperature": 0, "max_tokens": 12, **params}
    return client.post("/v1/chat/completions", json=body)


@pytest.fixture(scope="module")
def client(chat_server):
    with TestClient(app_for(chat_server)) as test_client:
        yield test_client


def test_api_answers_like_the_eval_stage(client, chat_server, pictures) -> None:
    """Served greedy answers are the eval stage's (BatchGenerator) for image and text-only."""
    offline = BatchGenerator(chat_server.model, prompt_input="user", max_new_tokens=12)
    for image, question in ((pictures[0], "what shape?"), (None, "hello")):
        response = ask(client, [image_message(question, image)])
        assert response.status_code == 200, response.text
        body = response.json()
        answer = body["choices"][0]["message"]["content"]
        assert answer.strip() == offline.generate([question], [image])[0]
        assert body["object"] == "chat.completion" and body["model"] == MODEL
        usage = body["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert body["choices"][0]["finish_reason"] in {"stop", "length"}


def test_api_stream_equals_the_answer(client, pictures) -> None:
    messages = [image_message("describe it", pictures[1])]
    full = ask(client, messages, max_tokens=20, ignore_eos=True).json()
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": messages,
            "temperature": 0,
            "max_tokens": 20,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == full["choices"][0]["message"]["content"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["usage"] == full["usage"]


def test_api_concurrent_requests_get_their_own_answers(chat_server, pictures) -> None:
    app = app_for(chat_server)

    def body(i):
        return {
            "model": MODEL,
            "messages": [image_message(f"question {i}", pictures[i])],
            "temperature": 0,
            "max_tokens": 10,
            "ignore_eos": True,
        }

    async def run(indices):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
            responses = await asyncio.gather(
                *(c.post("/v1/chat/completions", json=body(i)) for i in indices)
            )
        return [r.json()["choices"][0]["message"]["content"] for r in responses]

    alone = [asyncio.run(run([i]))[0] for i in range(6)]
    assert asyncio.run(run(range(6))) == alone
    assert len(set(alone)) > 1  # different images, different answers
    assert chat_server.engine.engine.stats.decode_by_batch.get(6)  # they did share steps


BAD_INPUTS = {
    "invalid JSON": (b"{not json", 400, "not valid JSON"),
    "no messages": ({"messages": []}, 400, "at least one message"),
    "messages missing": ({"messages": None}, 400, "messages"),
    "invalid base64": ("data:image/png;base64,@@@@", 400, "invalid base64"),
    "not an image": (
        "data:image/png;base64," + base64.b64encode(b"hello, not an image").decode(),
        400,
        "do not decode as an image",
    ),
    "gif media type": ("data:image/gif;base64,R0lGODlh", 400, "not supported"),
    "unknown model": ({"model": "gpt-4o"}, 404, "not served here"),
    "max_tokens zero": ({"max_tokens": 0}, 400, "out of range"),
    "max_tokens too large": ({"max_tokens": 10**6}, 400, "out of range"),
    "prompt longer than the context": (
        {"messages": [{"role": "user", "content": "x" * 600}], "max_tokens": 1},
        400,
        "context",
    ),
    "prompt plus max_tokens over the context": ({"max_tokens": 500}, 400, "context"),
    "unknown field": ({"tools": []}, 400, "unknown field"),
    "n above 1": ({"n": 2}, 400, "only 1"),
    "last message from the assistant": (
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
        400,
        "last message",
    ),
    "temperature out of range": ({"temperature": 5}, 400, "temperature"),
    "placeholder typed in text": (
        {"messages": [{"role": "user", "content": "<image> hi"}]},
        400,
        "placeholder",
    ),
    "http image URL while disabled": ("http://127.0.0.1:9/x.png", 400, "only data: URLs"),
}


def _bad_request(client, case, pictures):
    payload, _, _ = BAD_INPUTS[case]
    if isinstance(payload, bytes):
        return client.post(
            "/v1/chat/completions", content=payload, headers={"content-type": "application/json"}
        )
    body = {"model": MODEL, "messages": [image_message("q", pictures[0])], "max_tokens": 4}
    if isinstance(payload, str):  # an image URL
        body["messages"] = [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": payload}},
                    {"type": "text", "text": "q"},
                ],
            }
        ]
    else:
        body.update(payload)
    return client.post("/v1/chat/completions", json=body)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_api_bad_input_is_a_4xx_and_the_next_request_is_served(client, pictures, case) -> None:
    _, status, fragment = BAD_INPUTS[case]
    response = _bad_request(client, case, pictures)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert fragment in error["message"], error
    assert error["type"] in {"invalid_request_error", "not_found_error"}
    assert ask(client, [image_message("ok?", pictures[0])], max_tokens=2).status_code == 200


def test_api_image_limits(chat_server, pictures) -> None:
    with TestClient(app_for(chat_server, max_image_bytes=200, max_request_bytes=4096)) as c:
        response = ask(c, [image_message("q", pictures[0].resize((64, 64)))])
        assert (
            response.status_code == 400
            and "the limit is 200" in response.json()["error"]["message"]
        )
        big = {"model": MODEL, "messages": [{"role": "user", "content": "y" * 5000}]}
        response = c.post("/v1/chat/completions", json=big)
        assert response.status_code == 413
    with TestClient(app_for(chat_server)) as c:
        two = {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(pictures[0])}},
                {"type": "image_url", "image_url": {"url": data_url(pictures[1])}},
                {"type": "text", "text": "compare"},
            ],
        }
        response = ask(c, [two])
        assert response.status_code == 400
        assert "2 different images" in response.json()["error"]["message"]
        # the same image again (a chat client resending history) is one image
        again = [
            image_message("q", pictures[0]),
            {"role": "assistant", "content": "a"},
            image_message("and now?", pictures[0]),
        ]
        assert ask(c, again).status_code == 200
        for fmt in ("JPEG", "WEBP"):
            message = {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_url(pictures[2], fmt)}}
                ],
            }
            assert ask(c, [message]).status_code == 200, fmt


def test_api_key_routes_and_errors(chat_server, pictures) -> None:
    with TestClient(app_for(chat_server, api_key="sesame")) as c:
        assert c.get("/health").status_code == 200  # probes need no key
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sesame"}):
            response = c.get("/v1/models", headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["type"] == "authentication_error"
        ok = {"Authorization": "Bearer sesame"}
        models = c.get("/v1/models", headers=ok).json()
        assert [m["id"] for m in models["data"]] == [MODEL]
        assert c.get(f"/v1/models/{MODEL}", headers=ok).status_code == 200
        assert c.get("/v1/models/other", headers=ok).status_code == 404
        response = c.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [image_message("q")], "max_tokens": 2},
            headers=ok,
        )
        assert response.status_code == 200
        assert c.get("/nothing", headers=ok).json()["error"]["message"].endswith("no such route")
        assert c.get("/v1/chat/completions", headers=ok).status_code == 405


def test_api_conditioning_cache_hits_for_a_resent_image(tiny_checkpoint, pictures) -> None:
    from tests.pipelines.serve.conftest import make_server

    server = make_server(tiny_checkpoint)
    try:
        with TestClient(app_for(server)) as c:
            for question in ("one?", "two?", "three?"):
                assert (
                    ask(c, [image_message(question, pictures[3])], max_tokens=2).status_code == 200
                )
            stats = c.get("/stats").json()["generation"]["conditioning_cache"]
        assert (stats["hits"], stats["misses"], stats["entries"]) == (2, 1, 1)
    finally:
        server.shutdown()


def test_api_seeded_sampling_repeats(client, pictures) -> None:
    messages = [image_message("say something", pictures[4])]
    answers = {
        ask(client, messages, temperature=1.2, seed=5, max_tokens=12).json()["choices"][0][
            "message"
        ]["content"]
        for _ in range(2)
    }
    assert len(answers) == 1


class _ImageHandler(http.server.BaseHTTPRequestHandler):
    png = b""

    def do_GET(self) -> None:
        if self.path == "/slow.png":
            time.sleep(2)
        if self.path == "/missing.png":
            self.send_response(404)
            self.end_headers()
            return
        try:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(self.png * (50 if self.path == "/big.png" else 1))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server under test gave up on this one (the timeout case)

    def log_message(self, *args) -> None:
        pass


def test_api_http_image_urls_when_enabled(chat_server, pictures) -> None:
    buffer = io.BytesIO()
    pictures[5].save(buffer, format="PNG")
    _ImageHandler.png = buffer.getvalue()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    limit = 10 * len(_ImageHandler.png)  # /big.png sends 50 copies
    settings = {"allow_image_urls": True, "image_url_timeout_s": 0.5, "max_image_bytes": limit}

    def with_url(url):
        return [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "q"},
                ],
            }
        ]

    try:
        with TestClient(app_for(chat_server, **settings)) as c:
            ok = ask(c, with_url(f"{base}/ok.png"))
            inline = ask(c, [image_message("q", pictures[5])])
            assert ok.status_code == 200
            assert ok.json()["choices"][0]["message"] == inline.json()["choices"][0]["message"]
            for path, fragment in (
                ("/slow.png", "within 0.5 s"),
                ("/missing.png", "HTTP 404"),
                ("/big.png", f"the limit is {limit:,}"),
            ):
                response = ask(c, with_url(base + path))
                assert response.status_code == 400, path
                assert fragment in response.json()["error"]["message"]
            assert ask(c, with_url("ftp://x/y.png")).status_code == 400
    finally:
        server.shutdown()


def test_api_continuous_usage_gives_a_chunk_per_token(client, pictures) -> None:
    body = {
        "model": MODEL,
        "messages": [image_message("count", pictures[2])],
        "temperature": 0,
        "max_tokens": 7,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"continuous_usage_stats": True},
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        events = [
            json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")
        ]
    counts = [e["usage"]["completion_tokens"] for e in events if e.get("usage")]
    assert counts[:7] == list(range(1, 8))  # one chunk per generated token, then the final one
    assert counts[-1] == 7
