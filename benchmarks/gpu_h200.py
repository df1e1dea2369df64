"""VLoRA vs the input-space baseline at real 7B shapes on one H200 (~5 min).

    python -m benchmarks.gpu_h200 --out benchmarks/results/            # needs CUDA
    python -m benchmarks.gpu_h200 --dry-run --out /tmp/gpu_dry         # CPU, tiny, seconds
    python -m benchmarks.gpu_h200 --plot-from benchmarks/results/gpu_h200.json

Random-init Llama at Vicuna-7B-v1.5 shapes (h=4096, d=32 unless --blocks), bf16, with the
paper's generator (h_p=512, N=8, r=64, qkvom, k = every 4th block) and synthetic CLIP-L
features (576×1024). Sections, each written to the results as soon as it finishes (a failure
in one is recorded and the next still runs):
1. `peak`: bf16 GEMM sweep (best TFLOP/s) and device-to-device copy bandwidth.
2. `prefill`: batch 1, C ∈ {16, 32, 128, 512}: VLoRA with the image merged vs the baseline
   over L+C embeddings, L ∈ {256, 576}; the generator and the merge apart; counted FLOPs and
   achieved TFLOP/s vs the measured peak.
3. `crossover`: merge cost, decode step merged vs factorised (batch 1), batched factorised
   decode (batch 8) → n*, the answer length from which merging pays.
4. `train`: DeepSpeed ZeRO-2, bf16, 1 GPU, micro batch 4, pre-training setting (LLM frozen,
   bridge trainable; `--train-llm` trains the LLM too), captions of `--caption-tokens` tokens:
   step time, samples/s, text tokens/s, peak memory, VLoRA vs baseline at the same batch.
   Without DeepSpeed installed it falls back to plain torch AdamW and says so.
`--dry-run` runs every section on the CPU with a tiny model (DeepSpeed on gloo if installed).
Writes <out>/gpu_h200.{json,md,png} (dry run: gpu_h200_dryrun.{json,md,png}), drawn by
benchmarks/gpu_h200_report.py; the training section is benchmarks/gpu_train.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks import gpu_h200_report
from benchmarks import models as bm
from benchmarks.flops import count_flops, matmul_peak, memory_bandwidth, rate
from benchmarks.gpu_train import train_section
from benchmarks.machine import set_threads
from benchmarks.results_io import DEFAULT_OUT, write_results
from benchmarks.timing import Timing, summarize, time_call, time_interleaved
from vlora.flops import input_space_flops, vlora_flops
from vlora.utils.env import apply_offline_defaults

NAME = "gpu_h200"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_h200",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--dry-run", action="store_true", help="tiny model on the CPU: checks the logic")
    p.add_argument("--blocks", type=int, default=None, help="LLM blocks (default: all 32)")
    p.add_argument("--text-tokens", type=_ints, default=[16, 32, 128, 512])
    p.add_argument("--visual-tokens", type=_ints, default=[256, 576])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--decode-steps", type=int, default=32)
    p.add_argument("--decode-repeats", type=int, default=5)
    p.add_argument(
        "--prefill-batch", type=int, default=8, help="batched prefill (VLoRA factorised)"
    )
    p.add_argument("--micro-batches", type=_ints, default=[4, 16], help="training micro batches")
    p.add_argument("--caption-tokens", type=int, default=64, help="text tokens per training sample")
    p.add_argument("--train-steps", type=int, default=10, help="timed steps (after 3 warm-up)")
    p.add_argument("--train-llm", action="store_true", help="SFT-like: LLM trainable too")
    p.add_argument("--sections", default="peak,prefill,graphs,profile,crossover,train")
    p.add_argument(
        "--plot-from", default=None, help="only redraw <json>'s PNG beside it (no GPU needed)"
    )
    args = p.parse_args(argv)
    if args.dry_run:
        args.text_tokens = [8, 32]
        args.visual_tokens = [16, 64]
        args.repeats, args.warmup, args.decode_steps, args.decode_repeats = 2, 1, 4, 2
        # two micro batches: the second engine on the same model must work (hooks removed)
        args.micro_batches, args.caption_tokens, args.train_steps = [2, 3], 16, 2
        args.prefill_batch = 2
    return args


def require_cuda() -> None:
    if not torch.cuda.is_available():
        sys.exit(
            "benchmarks.gpu_h200 needs a CUDA GPU (written for one H200) and found none "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). "
            "Use --dry-run to check the script's logic on the CPU with a tiny model."
        )


class Results:
    """The results record, rewritten after every section so a crash keeps what was done."""

    def __init__(self, args: argparse.Namespace, name: str) -> None:
        self.args, self.name = args, name
        self.data: dict[str, Any] = {
            "benchmark": NAME,
            "dry_run": args.dry_run,
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "sections": {},
            "errors": {},
        }

    def section(self, key: str, fn: Callable[[], dict[str, Any]]) -> None:
        start = time.perf_counter()
        print(f"--- {key}", flush=True)
        try:
            self.data["sections"][key] = fn()
        except Exception as exc:  # record and go on: later sections may still work
            self.data["errors"][key] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            print(f"section {key} failed: {exc}", flush=True)
        self.data.setdefault("section_seconds", {})[key] = round(time.perf_counter() - start, 1)
        self.write()

    def write(self) -> None:
        write_results(self.args.out, self.name, self.data, gpu_h200_report.markdown(self.data))


# ----- sections -----------------------------------------------------------------------------
def peak_section(device: str, dry_run: bool) -> dict[str, Any]:
    if device == "cpu":
        gemm = matmul_peak(sizes=(128, 256) if dry_run else (512, 1024, 2048))
    else:
        gemm = matmul_peak(
            sizes=(2048, 4096, 8192), repeats=10, dtype=torch.bfloat16, device=device
        )
    copy = memory_bandwidth(1 if dry_run else 1024, repeats=10, device=device)
    return {"gemm": gemm, "copy_gb_per_s_read_plus_write": copy["copy_gb_per_s"]}


def _peak_gflops(results: Results) -> float:
    peak = results.data["sections"].get("peak", {}).get("gemm", {})
    return float(peak.get("best_gflops", float("nan")))


def _row(
    path: str,
    timing: Timing,
    fn: Callable[[], Any] | None,
    peak: float,
    flops: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    if flops is None and fn is not None:
        flops = count_flops(fn).total
    row = {"path": path, **extra, "median_ms": timing.median_s * 1e3, "iqr_ms": timing.iqr_s * 1e3}
    if flops is not None:
        row["counted_gflop"] = flops / 1e9
        row.update(rate(flops, timing.median_s, peak))
    return row


def prefill_section(pair: bm.BenchPair, args: argparse.Namespace, peak: float) -> dict[str, Any]:
    """Eager prefill: batch 1 (VLoRA merged) and a batch of B (VLoRA factorised, B images)."""
    vlora, baseline = pair.vlora, pair.baseline
    d, h, k, r = pair.blocks, pair.hidden, pair.inserted_blocks, pair.case.generator.rank
    feats = bm.image_features(pair, max(1, args.prefill_batch))
    rows: list[dict[str, Any]] = []
    ratios: dict[str, float] = {}
    with torch.inference_mode():
        vlora.set_deltas(feats[:1], torch.ones(1, dtype=torch.bool), 1)
        linears = pair.delta_linears()

        def merge_unmerge() -> None:
            for w in linears:
                w.merge()
            for w in linears:
                w.unmerge()

        gen = lambda: vlora.compute_factors(feats[:1])  # noqa: E731
        t = time_interleaved({"generator": gen, "merge": merge_unmerge}, args.repeats, args.warmup)
        rows.append(
            _row("generator", t["generator"], gen, peak, visual_tokens=pair.case.visual_tokens)
        )
        rows.append(
            _row(
                "merge",
                t["merge"],
                merge_unmerge,
                peak,
                paper_gflop=(24 * k * r * h**2 + 12 * k * h**2) / 1e9,
            )
        )
        vlora.clear_deltas()
        for batch in sorted({1, args.prefill_batch}):
            modes = bm.DeltaModes(pair, feats[:batch])
            mode = "merged" if batch == 1 else "factorised"
            getattr(modes, mode)()
            for c in args.text_tokens:
                ids = bm.text_ids(pair, batch, c)
                paths = {"vlora": lambda ids=ids: vlora.llm(input_ids=ids, logits_to_keep=1)}
                for n in args.visual_tokens:
                    emb = bm.embeddings(pair, batch, n + c)
                    paths[f"L{n}"] = lambda emb=emb: baseline.llm(
                        inputs_embeds=emb, logits_to_keep=1
                    )
                t = time_interleaved(paths, args.repeats, args.warmup)
                rows.append(
                    _row(
                        f"vlora_prefill_{mode}",
                        t["vlora"],
                        paths["vlora"],
                        peak,
                        batch=batch,
                        text_tokens=c,
                        paper_gflop=batch * (24 * c * d * h**2 + 4 * c**2 * d * h) / 1e9,
                    )
                )
                for n in args.visual_tokens:
                    rows.append(
                        _row(
                            "baseline_prefill",
                            t[f"L{n}"],
                            paths[f"L{n}"],
                            peak,
                            batch=batch,
                            text_tokens=c,
                            visual_tokens=n,
                            paper_gflop=batch * input_space_flops(d, h, c, n) / 1e9,
                        )
                    )
                    ratios[f"B{batch}_C{c}_L{n}"] = t["vlora"].median_s / t[f"L{n}"].median_s
                print(
                    f"B={batch} C={c}: vlora {mode} {t['vlora'].median_s * 1e3:.2f} ms, "
                    + ", ".join(
                        f"L={n} {t[f'L{n}'].median_s * 1e3:.2f} ms" for n in args.visual_tokens
                    ),
                    flush=True,
                )
            modes.clear()
    return {
        "rows": rows,
        "time_ratio_vlora_over_baseline": ratios,
        "paper_inference_gflop_C32": vlora_flops(d, h, 32, k, r) / 1e9,
    }


def cuda_graph(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Capture `fn` (static inputs) in a CUDA graph; returns its replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def graphs_section(pair: bm.BenchPair, args: argparse.Namespace, peak: float) -> dict[str, Any]:
    """Batch-1 prefill replayed from CUDA graphs: no Python or launch overhead left, so the
    time follows the FLOPs (eager batch-1 prefill at 7B is host-bound on an H200)."""
    if pair.device.type != "cuda":
        return {"skipped": "needs CUDA"}
    vlora, baseline = pair.vlora, pair.baseline
    d, h = pair.blocks, pair.hidden
    rows: list[dict[str, Any]] = []
    ratios: dict[str, float] = {}
    modes = bm.DeltaModes(pair, bm.image_features(pair, 1))
    with torch.inference_mode():
        modes.merged()
        for c in args.text_tokens:
            ids = bm.text_ids(pair, 1, c)
            eager = {
                "vlora": lambda ids=ids: vlora.llm(input_ids=ids, logits_to_keep=1, use_cache=False)
            }
            for n in args.visual_tokens:
                emb = bm.embeddings(pair, 1, n + c)
                eager[f"L{n}"] = lambda emb=emb: baseline.llm(
                    inputs_embeds=emb, logits_to_keep=1, use_cache=False
                )
            flops = {key: count_flops(fn).total for key, fn in eager.items()}
            replays = {key: cuda_graph(fn) for key, fn in eager.items()}
            t = time_interleaved(replays, args.repeats, args.warmup)
            rows.append(
                _row(
                    "vlora_prefill_merged_graph",
                    t["vlora"],
                    None,
                    peak,
                    flops["vlora"],
                    text_tokens=c,
                    paper_gflop=(24 * c * d * h**2 + 4 * c**2 * d * h) / 1e9,
                )
            )
            for n in args.visual_tokens:
                rows.append(
                    _row(
                        "baseline_prefill_graph",
                        t[f"L{n}"],
                        None,
                        peak,
                        flops[f"L{n}"],
                        text_tokens=c,
                        visual_tokens=n,
                        paper_gflop=input_space_flops(d, h, c, n) / 1e9,
                    )
                )
                ratios[f"C{c}_L{n}"] = t["vlora"].median_s / t[f"L{n}"].median_s
            print(
                f"graph C={c}: vlora {t['vlora'].median_s * 1e3:.2f} ms, "
                + ", ".join(
                    f"L={n} {t[f'L{n}'].median_s * 1e3:.2f} ms" for n in args.visual_tokens
                ),
                flush=True,
            )
            del replays
        modes.clear()
    return {"rows": rows, "time_ratio_vlora_over_baseline": ratios}


def device_profile(fn: Callable[[], Any], reps: int = 3) -> dict[str, Any]:
    """Wall time vs GPU kernel time of one call, and the kernels that take the most."""
    from torch.profiler import ProfilerActivity, profile

    wall = summarize([time_call(fn) for _ in range(reps)]).median_s
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    events = prof.key_averages()
    device_us = [(e.key, getattr(e, "self_device_time_total", 0) or 0, e.count) for e in events]
    kernel_ms = sum(us for _, us, _ in device_us) / 1e3 / reps
    top = sorted(device_us, key=lambda x: x[1], reverse=True)[:6]
    return {
        "wall_ms": wall * 1e3,
        "gpu_kernel_ms": kernel_ms,
        "gpu_busy_percent": 100 * kernel_ms / (wall * 1e3),
        "top_kernels": [
            {"op": key[:80], "ms": us / 1e3 / reps, "calls": n // reps} for key, us, n in top
        ],
    }


def profile_section(pair: bm.BenchPair, args: argparse.Namespace) -> dict[str, Any]:
    """Where batch-1 time goes on the GPU: kernel time vs wall time of the C=32 paths."""
    if pair.device.type != "cuda":
        return {"skipped": "needs CUDA"}
    vlora, baseline = pair.vlora, pair.baseline
    c, n = 32, max(args.visual_tokens)
    ids, emb = bm.text_ids(pair, 1, c), bm.embeddings(pair, 1, n + c)
    modes = bm.DeltaModes(pair, bm.image_features(pair, 1))
    out: dict[str, Any] = {}
    with torch.inference_mode():
        vlora_fn = lambda: vlora.llm(input_ids=ids, logits_to_keep=1)  # noqa: E731
        modes.merged()
        out["vlora_prefill_merged_C32"] = device_profile(vlora_fn)
        modes.factorised()
        out["vlora_prefill_factorised_C32"] = device_profile(vlora_fn)
        modes.clear()
        out[f"baseline_prefill_C32_L{n}"] = device_profile(
            lambda: baseline.llm(inputs_embeds=emb, logits_to_keep=1)
        )
        out["generator"] = device_profile(lambda: vlora.compute_factors(modes.features))
    for key, v in out.items():
        print(f"{key}: wall {v['wall_ms']:.2f} ms, kernels {v['gpu_kernel_ms']:.2f} ms", flush=True)
    return out


def crossover_section(pair: bm.BenchPair, args: argparse.Namespace) -> dict[str, Any]:
    """Merge cost and merged vs factorised prefill and decode steps, timed round-robin."""
    from benchmarks.merge_crossover import crossover_tokens

    vlora = pair.vlora
    c = 32 if 32 in args.text_tokens else args.text_tokens[0]
    ids = bm.text_ids(pair, 1, c)
    modes = bm.DeltaModes(pair, bm.image_features(pair, 8))
    with torch.inference_mode():
        modes.factorised(1)
        linears = pair.delta_linears()

        def merge_unmerge() -> None:
            for w in linears:
                w.merge()
            for w in linears:
                w.unmerge()

        prefill = lambda: vlora.llm(input_ids=ids, logits_to_keep=1)  # noqa: E731
        t = time_interleaved({"merge": merge_unmerge}, args.repeats, args.warmup)
        timings = {"merge": t["merge"]}
        t = time_interleaved(
            {"prefill_merged": prefill, "prefill_factorised": prefill},
            args.repeats,
            args.warmup,
            setups={
                "prefill_merged": modes.merged,
                "prefill_factorised": lambda: modes.factorised(1),
            },
        )
        timings.update(t)
        loop1, loop8 = (
            bm.DecodeLoop(vlora.llm, 1, c, args.decode_steps),
            bm.DecodeLoop(vlora.llm, 8, c, args.decode_steps),
        )

        def with_state(switch: Callable[[], None], loop: bm.DecodeLoop) -> Callable[[], None]:
            return lambda: (switch(), loop.reset())

        t = time_interleaved(
            {
                "decode_merged": loop1.run,
                "decode_factorised": loop1.run,
                "decode_factorised_b8": loop8.run,
            },
            args.decode_repeats,
            1,
            setups={
                "decode_merged": with_state(modes.merged, loop1),
                "decode_factorised": with_state(lambda: modes.factorised(1), loop1),
                "decode_factorised_b8": with_state(lambda: modes.factorised(8), loop8),
            },
        )
        timings.update(t)
        modes.clear()
    steps = args.decode_steps
    step = {m: timings[f"decode_{m}"].median_s / steps for m in ("merged", "factorised")}
    n_star = crossover_tokens(
        timings["merge"].median_s,
        timings["prefill_merged"].median_s,
        timings["prefill_factorised"].median_s,
        step["merged"],
        step["factorised"],
    )
    out = {
        "prompt_tokens": c,
        "timings_ms": {k: v.median_s * 1e3 for k, v in timings.items()},
        "decode_step_ms": {k: v * 1e3 for k, v in step.items()},
        "decode_step_factorised_b8_ms": timings["decode_factorised_b8"].median_s / steps * 1e3,
        "crossover_new_tokens": n_star if math.isfinite(n_star) else None,
    }
    print(
        f"n* = {n_star:.2f} new tokens; step merged {step['merged'] * 1e3:.3f} ms, "
        f"factorised {step['factorised'] * 1e3:.3f} ms, merge {timings['merge'].median_s * 1e3:.3f} ms",
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    apply_offline_defaults()
    args = parse_args(argv)
    if args.plot_from:
        source = Path(args.plot_from)
        data = json.loads(source.read_text())
        print(f"wrote {gpu_h200_report.plot(data, source.with_suffix('.png'))}")
        return data
    if not args.dry_run:
        require_cuda()
    device = "cpu" if args.dry_run else "cuda"
    if device == "cpu":
        set_threads(min(2, os.cpu_count() or 1))
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
    results = Results(args, f"{NAME}_dryrun" if args.dry_run else NAME)
    case = bm.tiny_case() if args.dry_run else bm.vicuna7b_case()
    if args.blocks is not None:
        arch = {**case.arch, "num_hidden_layers": args.blocks}
        case = bm.BenchCase(
            case.name + f"-{args.blocks}blocks",
            case.description + f", cut to {args.blocks} blocks",
            case.llm.model_copy(update={"architecture": arch}),
            case.generator,
            case.feature_dim,
            case.visual_tokens,
        )
    sections = args.sections.split(",")
    if "peak" in sections:
        results.section("peak", lambda: peak_section(device, args.dry_run))
    start = time.perf_counter()
    pair = bm.build_pair(case, device=device, dtype=torch.bfloat16)
    results.data["case"] = f"{case.name}: {case.description}"
    results.data["build_seconds"] = round(time.perf_counter() - start, 1)
    print(f"built {case.name} in {results.data['build_seconds']} s", flush=True)
    peak = _peak_gflops(results)
    if "prefill" in sections:
        results.section("prefill", lambda: prefill_section(pair, args, peak))
    if "graphs" in sections:
        results.section("graphs", lambda: graphs_section(pair, args, peak))
    if "profile" in sections:
        results.section("profile", lambda: profile_section(pair, args))
    if "crossover" in sections:
        results.section("crossover", lambda: crossover_section(pair, args))
    if "train" in sections:
        results.section("train", lambda: train_section(pair, args, device))
    results.write()
    with contextlib.suppress(Exception):  # a missing plotting backend must not lose results
        gpu_h200_report.plot(results.data, Path(args.out) / f"{results.name}.png")
    print(gpu_h200_report.markdown(results.data))
    return results.data


if __name__ == "__main__":
    main()
