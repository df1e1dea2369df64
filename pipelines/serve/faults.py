"""Fault drill: SIGKILL the generation replica under load and measure the gap.

    python -m pipelines.serve.faults --model DIR_OR_PRESET [--in-flight 6]

starts `python -m pipelines serve`, keeps `in_flight` long requests generating (half streamed,
half not), kills the `Generator` replica's process (its pid from `/stats`), and records what
each in-flight request got, then how long until a new request is answered again (`gap_s`,
from the kill). Ray Serve's controller notices the dead actor and starts a replacement, which
loads the model again: most of the gap is that load.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import time
from typing import Any

import httpx

CLIENT_TIMEOUT_S = 120.0


def _body(model: str, image_url: str | None, max_tokens: int, stream: bool) -> dict[str, Any]:
    content: Any = "tell me a long story"
    if image_url:
        content = [
            {"type": "image_url", "image_url": {"url": image_url}},
            {"type": "text", "text": "describe it at length"},
        ]
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
    }


def _one(base_url: str, body: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    out: dict[str, Any] = {"stream": body["stream"], "status": None, "message": ""}
    try:
        with httpx.Client(timeout=CLIENT_TIMEOUT_S) as client:
            if not body["stream"]:
                response = client.post(f"{base_url}/v1/chat/completions", json=body)
                out["status"] = response.status_code
                if response.status_code == 200:
                    out["result"] = "answered"
                else:
                    out["result"] = "http_5xx" if response.status_code >= 500 else "http_4xx"
                    out["message"] = response.json()["error"]["message"]
                    out["type"] = response.json()["error"]["type"]
            else:
                with client.stream("POST", f"{base_url}/v1/chat/completions", json=body) as r:
                    out["status"] = r.status_code
                    if r.status_code != 200:
                        out["result"] = "http_5xx" if r.status_code >= 500 else "http_4xx"
                        out["message"] = json.loads(r.read())["error"]["message"]
                        return out
                    out["result"] = "stream_incomplete"
                    for line in r.iter_lines():
                        if line == "data: [DONE]":
                            out["result"] = out.get("result_seen", "answered")
                            break
                        event = json.loads(line[6:]) if line.startswith("data: {") else {}
                        if "error" in event:
                            out["result_seen"] = "stream_error"
                            out["message"] = event["error"]["message"]
                            out["type"] = event["error"]["type"]
                    out.pop("result_seen", None)
                    if out["status"] >= 500:
                        out["result"] = "http_5xx"
    except httpx.TimeoutException:
        out["result"] = "hung"
    except httpx.HTTPError as err:
        out["result"], out["message"] = "connection_error", str(err)
    finally:
        out["seconds"] = round(time.monotonic() - started, 2)
    return out


def generator_pid(base_url: str, headers: dict[str, str] | None = None) -> int:
    stats = httpx.get(f"{base_url}/stats", headers=headers, timeout=60).json()
    return int(stats["generation"]["pid"])


def measure_replica_kill(
    base_url: str,
    model: str,
    images: list | None = None,
    in_flight: int = 6,
    max_tokens: int = 400,
) -> dict[str, Any]:
    """Kill the generation replica while `in_flight` requests generate (see module docstring)."""
    from PIL import Image

    def url(i: int) -> str | None:
        if not images:
            return None
        import base64
        import io

        image: Image.Image = images[i % len(images)]
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()

    killed = generator_pid(base_url)
    context = httpx.get(f"{base_url}/v1/models", timeout=60).json()["data"][0]["context_length"]
    max_tokens = min(max_tokens, context - 256)  # room for the prompt
    pool = concurrent.futures.ThreadPoolExecutor(in_flight + 1)
    futures = [
        pool.submit(_one, base_url, _body(model, url(i), max_tokens, stream=i % 2 == 0))
        for i in range(in_flight)
    ]
    time.sleep(1.5)  # every request is admitted and generating
    kill_time = time.monotonic()
    os.kill(killed, signal.SIGKILL)
    outcomes = [f.result() for f in futures]
    gap = None
    probes = 0
    while time.monotonic() - kill_time < 300:
        probes += 1
        result = _one(base_url, _body(model, url(0), 4, stream=False))
        if result["result"] == "answered":
            gap = time.monotonic() - kill_time
            break
        time.sleep(0.5)
    pool.shutdown()
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome["result"]] = counts.get(outcome["result"], 0) + 1
    return {
        "killed_pid": killed,
        "new_pid": generator_pid(base_url),
        "in_flight": outcomes,
        "outcomes": counts,
        "failed": sum(o["result"] != "answered" for o in outcomes),
        "hung": counts.get("hung", 0),
        "gap_s": round(gap, 2) if gap is not None else None,
        "probes_until_answered": probes,
    }


def main(argv: list[str] | None = None) -> int:
    from pipelines.serve.process import ServerProcess

    parser = argparse.ArgumentParser(prog="python -m pipelines.serve.faults", description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--in-flight", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--out", help="Write the report (JSON) here.")
    args = parser.parse_args(argv)
    with ServerProcess(["--model", args.model]) as server:
        name = httpx.get(f"{server.base_url}/v1/models").json()["data"][0]["id"]
        report = measure_replica_kill(server.base_url, name, None, args.in_flight, args.max_tokens)
        report["server_started_in_s"] = round(server.started_in_s, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
