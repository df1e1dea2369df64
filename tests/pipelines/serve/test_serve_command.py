"""`python -m pipelines serve` for real (Ray Serve on a private loopback cluster) with the official
`openai` client: a saved tiny checkpoint whose deltas change the answers, and the tiny-llama
preset. Answers match the eval stage's offline generation, streams match answers, concurrent
requests match lone ones, bad inputs are 4xx without hurting the next request, and SIGTERM /
Ctrl-C leave no process and no listening port behind."""

from __future__ import annotations

import base64
import concurrent.futures
import signal

import httpx
import openai
import pytest

from pipelines.serve.process import ServerProcess
from tests.pipelines.serve.conftest import data_url
from vlora.auto import load_pretrained
from vlora.eval.generate_fn import BatchGenerator

pytestmark = pytest.mark.slow


def user(text: str, image=None) -> list[dict]:
    if image is None:
        return [{"role": "user", "content": text}]
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(image)}},
                {"type": "text", "text": text},
            ],
        }
    ]


def answer(client: openai.OpenAI, model: str, messages, **params) -> str:
    params = {"max_tokens": 12, "temperature": 0, **params}
    response = client.chat.completions.create(model=model, messages=messages, **params)
    return response.choices[0].message.content


def streamed(client: openai.OpenAI, model: str, messages, **params) -> str:
    params = {"max_tokens": 12, "temperature": 0, **params}
    stream = client.chat.completions.create(model=model, messages=messages, stream=True, **params)
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def check_stopped_cleanly(server: ServerProcess, sig: int = signal.SIGTERM) -> None:
    assert server.stop(sig) == 0, server.log_tail()
    assert server.leftovers() == [], server.log_tail()


def test_serve_checkpoint_with_the_openai_client(tiny_checkpoint, pictures) -> None:
    model = "tiny-vlora"
    offline = BatchGenerator(load_pretrained(tiny_checkpoint), prompt_input="user")
    with ServerProcess(["--model", str(tiny_checkpoint), "--max-batch-size", "8"]) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="-", max_retries=0)
        assert [m.id for m in client.models.list().data] == [model]
        # image and text-only answers: what the eval stage's generation gives
        for image, question in ((pictures[0], "what shape?"), (None, "hello")):
            served = answer(client, model, user(question, image))
            assert served.strip() == offline.generate([question], [image], max_new_tokens=12)[0]
        # a stream spells the same answer
        messages = user("describe", pictures[1])
        fixed = {"max_tokens": 24, "extra_body": {"ignore_eos": True}}
        assert streamed(client, model, messages, **fixed) == answer(
            client, model, messages, **fixed
        )
        # 6 concurrent requests with different images: each gets what it gets alone
        asks = [user(f"question {i}", pictures[i]) for i in range(6)]
        alone = [answer(client, model, m, **fixed) for m in asks]
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            together = list(pool.map(lambda m: answer(client, model, m, **fixed), asks))
        assert together == alone
        assert len(set(alone)) > 1
        stats = httpx.get(f"{server.base_url}/stats").json()
        assert max(int(b) for b in stats["generation"]["engine"]["decode_steps_by_batch"]) > 1
        # every bad input: a 4xx with OpenAI's error JSON, then a good request is answered
        bad = [
            (lambda: client.chat.completions.create(model="nope", messages=asks[0]), 404),
            (lambda: answer(client, model, asks[0], max_tokens=0), 400),
            (lambda: answer(client, model, asks[0], max_tokens=10**7), 400),
            (lambda: answer(client, model, user("x" * 2000)), 400),
            (lambda: client.chat.completions.create(model=model, messages=[]), 400),
        ]
        for url in (
            "data:image/png;base64,@@not-base64@@",
            "data:image/png;base64," + base64.b64encode(b"no image here").decode(),
            data_url(pictures[0].resize((6000, 5000))),  # over the 25M-pixel limit
        ):
            part = {"type": "image_url", "image_url": {"url": url}}
            bad.append(
                (lambda p=part: answer(client, model, [{"role": "user", "content": [p]}]), 400)
            )
        two = [{"type": "image_url", "image_url": {"url": data_url(p)}} for p in pictures[:2]]
        bad.append((lambda: answer(client, model, [{"role": "user", "content": two}]), 400))
        for call, status in bad:
            with pytest.raises(openai.APIStatusError) as caught:
                call()
            assert caught.value.status_code == status
            assert caught.value.body["message"]  # OpenAI error JSON: {"error": {"message": …}}
            assert answer(client, model, asks[0], max_tokens=2)
        invalid_json = httpx.post(
            f"{server.base_url}/v1/chat/completions",
            content=b"{oops",
            headers={"content-type": "application/json"},
        )
        assert invalid_json.status_code == 400 and "JSON" in invalid_json.json()["error"]["message"]
        assert answer(client, model, asks[0], max_tokens=2)
        check_stopped_cleanly(server)


def test_serve_preset_with_a_key_and_ctrl_c() -> None:
    with ServerProcess(["--model", "tiny-llama", "--api-key", "sesame"]) as server:
        anonymous = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="-", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            anonymous.models.list()
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="sesame", max_retries=0)
        text = answer(client, "tiny-llama", user("hi"), max_tokens=8)
        assert text == streamed(client, "tiny-llama", user("hi"), max_tokens=8)
        check_stopped_cleanly(server, signal.SIGINT)


def test_serve_refuses_a_bad_model_with_the_reason(tmp_path) -> None:
    server = ServerProcess(["--model", str(tmp_path)], startup_timeout_s=60)
    with pytest.raises(RuntimeError, match="is not a VLoRA checkpoint"):
        server.start()
    assert server.process.returncode == 2
