"""Load test of the served API: VLoRA against the input-space baseline, side by side in one run.

    .venv/bin/python -m benchmarks.serve_load \\
        --vlora-checkpoint runs/local/sft/<key>/model \\
        --baseline-checkpoint runs/local-baseline/sft/<key>/model \\
        --random-7b                                      # results/serve_load.{json,md,png}

For each model pair (the local default's trained checkpoints; the random-init Llama with
Vicuna-7B's proportions at h = 512 and the paper's generator, images of 336 px = L 576 visual
tokens, built into a temporary folder) and each design, `python -m pipelines serve` is started
on 127.0.0.1 (Ray Serve, or `--backend inprocess`), warmed up, and driven closed-loop: at each
concurrency c (1, 2, 4, 8, 16) c clients send the next request as soon as their previous one
finished, until `--requests` requests or `--level-seconds` passed. A request is an easy-vqa test
image (inline base64 PNG) and one of its questions, streamed, with a fixed `--max-tokens` and
`ignore_eos`, so both designs produce exactly as many tokens. Measured per level: request
throughput, output tokens/s, time to first token (TTFT), time per output token after the first
(TPOT), end-to-end latency (mean, p50, p90, p99), failures; and from the server's `/stats`, the
engine's prefill and decode time, the decode batch sizes it ran, and the conditioning cache's
hits, so a result says where its time went. Loopback only, bounded in requests and time.
The Markdown and the plot are drawn by benchmarks/serve_load_report.py.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import serve_load_report
from benchmarks.results_io import DEFAULT_OUT, write_results

NAME = "serve_load"
DESIGNS = ("vlora", "input_space")


# ----- workload ------------------------------------------------------------------------------
def easyvqa_workload(count: int, images: int) -> list[dict[str, Any]]:
    """`count` (image, question) pairs cycling through the first `images` easy-vqa test images,
    all questions of an image in a row (a chat client asking several about one picture)."""
    from vlora.eval.local_benchmarks import easyvqa_image_path, easyvqa_test_questions

    questions = easyvqa_test_questions()
    chosen = sorted({q.image_id for q in questions})[:images]
    by_image = {i: [q for q in questions if q.image_id == i] for i in chosen}
    pairs = [(i, q.text) for i in chosen for q in by_image[i]]
    encoded = {
        i: "data:image/png;base64," + base64.b64encode(easyvqa_image_path(i).read_bytes()).decode()
        for i in chosen
    }
    return [
        {"image": encoded[pairs[k % len(pairs)][0]], "question": pairs[k % len(pairs)][1]}
        for k in range(count)
    ]


def request_body(model: str, item: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": item["image"]}},
                    {"type": "text", "text": item["question"]},
                ],
            }
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }


# ----- one request, one level --------------------------------------------------------------------
async def one_request(client, url: str, body: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    record: dict[str, Any] = {"ok": False, "ttft_s": None, "output_tokens": 0}
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                record["error"] = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return record
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    record["error"] = event["error"]["message"]
                    return record
                usage = event.get("usage")
                if usage:
                    record["output_tokens"] = usage["completion_tokens"]
                    record["prompt_tokens"] = usage["prompt_tokens"]
                # the first token, whether or not it decodes to text (a random model's ids
                # often do not): continuous usage counts it
                if usage and usage["completion_tokens"] >= 1 and record["ttft_s"] is None:
                    record["ttft_s"] = time.perf_counter() - started
        record["ok"] = record["ttft_s"] is not None
    except Exception as err:  # counted as a failure, the level goes on
        record["error"] = f"{type(err).__name__}: {err}"
    finally:
        record["e2e_s"] = time.perf_counter() - started
    return record


async def run_level(
    base_url: str, bodies: list[dict[str, Any]], concurrency: int, seconds: float
) -> tuple[list[dict[str, Any]], float]:
    import httpx

    url = f"{base_url}/v1/chat/completions"
    pending = list(reversed(bodies))
    records: list[dict[str, Any]] = []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:

        async def worker() -> None:
            while pending and time.perf_counter() < deadline:
                records.append(await one_request(client, url, pending.pop()))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return records, wall


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {k: float("nan") for k in ("mean", "p50", "p90", "p99")}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]

    return {
        "mean": statistics.fmean(ordered),
        "p50": pick(0.50),
        "p90": pick(0.90),
        "p99": pick(0.99),
    }


def summarize_level(records: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    ok = [r for r in records if r["ok"]]
    tokens = sum(r["output_tokens"] for r in ok)
    tpot = [
        (r["e2e_s"] - r["ttft_s"]) / (r["output_tokens"] - 1) for r in ok if r["output_tokens"] > 1
    ]
    return {
        "requests": len(records),
        "failures": len(records) - len(ok),
        "errors": sorted({r.get("error", "") for r in records if not r["ok"]})[:5],
        "wall_s": wall,
        "request_throughput": len(ok) / wall if wall else float("nan"),
        "output_tokens_per_s": tokens / wall if wall else float("nan"),
        "prompt_tokens": statistics.fmean(r["prompt_tokens"] for r in ok) if ok else float("nan"),
        "ttft_s": percentiles([r["ttft_s"] for r in ok]),
        "tpot_s": percentiles(tpot),
        "e2e_s": percentiles([r["e2e_s"] for r in ok]),
    }


# ----- where the time goes (server counters, differenced around a level) ---------------------------
def engine_counters(stats: dict[str, Any]) -> dict[str, Any]:
    generation = stats["generation"]
    engine = generation["engine"]
    cache = generation["conditioning_cache"]
    return {
        "prefill_seconds": engine["prefill_seconds"],
        "decode_seconds": engine["decode_seconds"],
        "prefill_steps": engine["prefill_steps"],
        "decode_steps": engine["decode_steps"],
        "merged_decode_steps": engine["merged_decode_steps"],
        "steps_by_batch": {int(k): v for k, v in engine["decode_steps_by_batch"].items()},
        "ms_by_batch": {int(k): v for k, v in engine["decode_ms_per_step_by_batch"].items()},
        "cache_hits": cache["hits"],
        "cache_misses": cache["misses"],
        "torch_threads": generation.get("torch_threads"),
    }


def where_time_went(before: dict[str, Any], after: dict[str, Any], wall: float) -> dict[str, Any]:
    steps = {
        b: after["steps_by_batch"].get(b, 0) - before["steps_by_batch"].get(b, 0)
        for b in after["steps_by_batch"]
    }
    steps = {b: n for b, n in steps.items() if n > 0}
    prefill = after["prefill_seconds"] - before["prefill_seconds"]
    decode = after["decode_seconds"] - before["decode_seconds"]
    hits = after["cache_hits"] - before["cache_hits"]
    lookups = hits + after["cache_misses"] - before["cache_misses"]
    decode_steps = sum(steps.values())
    return {
        "prefill_s": prefill,
        "decode_s": decode,
        "engine_busy_share": (prefill + decode) / wall if wall else float("nan"),
        "mean_decode_batch": sum(b * n for b, n in steps.items()) / decode_steps
        if decode_steps
        else float("nan"),
        "decode_ms_per_step": 1000 * decode / decode_steps if decode_steps else float("nan"),
        "decode_steps_by_batch": steps,
        "merged_decode_steps": after["merged_decode_steps"] - before["merged_decode_steps"],
        "prefill_steps": after["prefill_steps"] - before["prefill_steps"],
        "cache_hit_rate": hits / lookups if lookups else float("nan"),
    }


# ----- models -----------------------------------------------------------------------------------
def random_7b_checkpoints(folder: Path) -> dict[str, Path]:
    """The llama7b-h512 case of benchmarks/models.py as two servable checkpoints, with a real
    (random) CLIP-shaped tower at 336 px (L = 576) and SmolLM2's short chatml prompt shape."""
    from benchmarks.models import build_pair, llama7b_h512_case

    case = llama7b_h512_case()
    pair = build_pair(case)
    from vlora.vision import build_vision_encoder

    vision = build_vision_encoder(pair.vlora.config.vision)  # random init, seeded
    out = {}
    for design, model in (("vlora", pair.vlora), ("input_space", pair.baseline)):
        model.vision = vision
        # byte-level tokens: vicuna_v1's system sentence alone would be ~160 of them
        model.config = model.config.model_copy(update={"template": "chatml"})
        model.llm_modified = True
        out[design] = model.save_pretrained(folder / f"llama7b-h512-{design}")
    return out


def measure_server(
    checkpoint: str, design: str, args: argparse.Namespace, workload: list[dict[str, Any]]
) -> dict[str, Any]:
    import httpx

    from pipelines.serve.process import ServerProcess

    serve_args = [
        "--model",
        checkpoint,
        "--backend",
        args.backend,
        "--max-batch-size",
        str(max(args.concurrency)),
        "--llm-cpus",
        str(args.threads),
        "--set",
        f"llm.torch_threads={args.threads}",
        "--set",
        f"encoder.torch_threads={args.encoder_threads}",
    ]
    with ServerProcess(serve_args) as server:
        card = httpx.get(f"{server.base_url}/v1/models", timeout=60).json()["data"][0]
        model = card["id"]
        warm = [request_body(model, item, args.max_tokens) for item in workload[: args.warmup]]
        asyncio.run(run_level(server.base_url, warm, max(1, min(4, args.warmup)), 600))
        levels = []
        for concurrency in args.concurrency:
            bodies = [
                request_body(model, item, args.max_tokens) for item in workload[: args.requests]
            ]
            before = engine_counters(httpx.get(f"{server.base_url}/stats", timeout=60).json())
            records, wall = asyncio.run(
                run_level(server.base_url, bodies, concurrency, args.level_seconds)
            )
            after = engine_counters(httpx.get(f"{server.base_url}/stats", timeout=60).json())
            level = {"concurrency": concurrency, **summarize_level(records, wall)}
            level["server"] = where_time_went(before, after, wall)
            levels.append(level)
            print(
                f"  {design:<11} c={concurrency:<2} {level['output_tokens_per_s']:7.1f} tok/s "
                f"TTFT p50 {1000 * level['ttft_s']['p50']:7.1f} ms  "
                f"mean batch {level['server']['mean_decode_batch']:.2f}  "
                f"failures {level['failures']}",
                flush=True,
            )
        return {
            "design": design,
            "checkpoint": checkpoint,
            "model": card,
            "server_start_s": server.started_in_s,
            "torch_threads": after["torch_threads"],
            "levels": levels,
        }


# ----- comparison ------------------------------------------------------------------------------
def checks(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets: VLoRA's tokens/s at c=8 ≥ 3× its c=1; on the local model VLoRA's throughput
    and TTFT no worse than the baseline's at every c; at L=576 its throughput ≥ 1.3×."""
    out = []
    for case in cases:
        runs = {r["design"]: {lv["concurrency"]: lv for lv in r["levels"]} for r in case["runs"]}
        vlora, base = runs.get("vlora", {}), runs.get("input_space", {})
        if 1 in vlora and 8 in vlora:
            ratio = _ratio(vlora[8]["output_tokens_per_s"], vlora[1]["output_tokens_per_s"])
            out.append(_check(case["name"], "VLoRA tok/s c=8 / c=1 >= 3", ratio, ratio >= 3))
        for c in sorted(set(vlora) & set(base)):
            ratio = _ratio(vlora[c]["output_tokens_per_s"], base[c]["output_tokens_per_s"])
            ttft = _ratio(vlora[c]["ttft_s"]["p50"], base[c]["ttft_s"]["p50"])
            need = 1.3 if case["visual_tokens"] >= 576 else 1.0
            out.append(
                _check(
                    case["name"], f"c={c} tok/s VLoRA / baseline >= {need}", ratio, ratio >= need
                )
            )
            if need == 1.0:
                out.append(
                    _check(case["name"], f"c={c} TTFT p50 VLoRA / baseline <= 1", ttft, ttft <= 1.0)
                )
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _check(case: str, what: str, value: float, ok: bool) -> dict[str, Any]:
    return {"case": case, "check": what, "value": value, "met": bool(ok)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.serve_load", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--vlora-checkpoint", help="The local run's VLoRA checkpoint folder.")
    p.add_argument("--baseline-checkpoint", help="The local run's baseline checkpoint folder.")
    p.add_argument("--case-name", default="local", help="Name of the checkpoint pair's case.")
    p.add_argument(
        "--random-7b", action="store_true", help="Also the 7B-proportioned model, L=576."
    )
    p.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8, 16]
    )
    p.add_argument("--requests", type=int, default=64, help="Requests per level at most.")
    p.add_argument("--level-seconds", type=float, default=180.0, help="Time per level at most.")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--images", type=int, default=50, help="easy-vqa test images used.")
    p.add_argument(
        "--threads", type=int, default=2, help="torch threads of the generation replica."
    )
    p.add_argument("--encoder-threads", type=int, default=1)
    p.add_argument("--backend", choices=["ray", "inprocess"], default="ray")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--name", default=NAME, help="Results file name.")
    p.add_argument("--plot-from", help="Only redraw <json>'s PNG beside it.")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.plot_from:
        result = json.loads(Path(args.plot_from).read_text())
        serve_load_report.plot(result, Path(args.plot_from).with_suffix(".png"))
        return result
    from vlora.utils.env import apply_offline_defaults

    apply_offline_defaults()
    pairs: list[tuple[str, int, dict[str, str]]] = []
    scratch = tempfile.TemporaryDirectory(prefix="vlora-serve-load-")
    if args.vlora_checkpoint or args.baseline_checkpoint:
        from vlora.checkpoint import read_checkpoint_config

        given = {
            d: c
            for d, c in (
                ("vlora", args.vlora_checkpoint),
                ("input_space", args.baseline_checkpoint),
            )
            if c
        }
        for design, folder in given.items():
            kind = read_checkpoint_config(folder)["kind"]
            if kind != design:
                raise SystemExit(
                    f"--{design.replace('_', '-')}-checkpoint {folder} holds a {kind} model"
                )
        L = read_checkpoint_config(next(iter(given.values())))["model"]["vision"]
        pairs.append((args.case_name, (L["image_size"] // L["patch_size"]) ** 2, given))
    if args.random_7b:
        built = random_7b_checkpoints(Path(scratch.name))
        pairs.append(("llama7b-h512 (random)", 576, {d: str(p) for d, p in built.items()}))
    if not pairs:
        raise SystemExit(
            "nothing to measure: give --vlora-checkpoint/--baseline-checkpoint and/or --random-7b"
        )
    workload = easyvqa_workload(max(args.requests, args.warmup), args.images)
    cases = []
    try:
        for name, visual_tokens, checkpoints in pairs:
            print(f"{name}:", flush=True)
            runs = [
                measure_server(checkpoints[d], d, args, workload)
                for d in DESIGNS
                if d in checkpoints
            ]
            cases.append({"name": name, "visual_tokens": visual_tokens, "runs": runs})
    finally:
        scratch.cleanup()
    result = {
        "settings": {k: v for k, v in vars(args).items() if k != "plot_from"},
        "cases": cases,
        "server_cpu_threads": args.threads,
        "logical_cpus": os.cpu_count(),
    }
    result["checks"] = checks(cases)
    _, md_path = write_results(args.out, args.name, result, serve_load_report.markdown(result))
    serve_load_report.plot(result, Path(args.out) / f"{args.name}.png")
    print(md_path.read_text())
    return result


if __name__ == "__main__":
    main()
