"""LLM cost of VLoRA vs the input-space baseline, same LLM, one run.

    python -m benchmarks.llm_cost                       # both cases, ~6 min on 2 cores
    python -m benchmarks.llm_cost --cases smollm2 --repeats 3

For each case (benchmarks/models.py: SmolLM2-135M with real weights, and a random-init Llama
with Vicuna-7B proportions at h=512) and batch 1:
- prefill latency at C text tokens: VLoRA with the image merged into the weights (the LLM sees
  C tokens) vs the baseline (L + C input embeddings), L ∈ {256, 576}; also VLoRA factorised;
- the generator (features → every W_v) and the merge, timed apart, and the whole VLoRA path
  (generator + merge + prefill + unmerge) vs the whole baseline path (projector + splice +
  prefill) through the models' own forward;
- decode tokens/s at batch 1 (VLoRA merged) and 8 (VLoRA factorised: one image per sample);
- FLOPs of every path: the paper's formula (vlora.flops) and an exact count of the operators
  that run (torch.utils.flop_counter); achieved FLOP/s against this machine's measured GEMM peak;
- torch.profiler's top operators for the C=32 paths (where the time goes).
Prefill is `llm(..., logits_to_keep=1)`: what `generate` runs (logits of the last position only).
Writes benchmarks/results/llm_cost.{json,md,png} (drawn by benchmarks/llm_cost_report.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from benchmarks import contention, llm_cost_report
from benchmarks import models as bm
from benchmarks.flops import FlopCount, count_flops, matmul_peak, memory_bandwidth, rate, top_ops
from benchmarks.llm_cost_report import CLAIM_MAX_RATIO
from benchmarks.machine import machine_info, set_threads
from benchmarks.results_io import DEFAULT_OUT, write_results
from benchmarks.timing import Timing, time_interleaved
from vlora.flops import generator_flops, input_space_flops, vlora_flops
from vlora.generator import PerceptualWeightsGenerator
from vlora.utils.env import apply_offline_defaults

NAME = "llm_cost"
KEY_TEXT_TOKENS = 32
KEY_VISUAL_TOKENS = 576


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.llm_cost",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument(
        "--cases", default="smollm2,llama7b-h512", help="comma list of benchmarks.models.CASES"
    )
    p.add_argument("--text-tokens", type=_ints, default=[16, 32, 128, 512], help="C values")
    p.add_argument("--visual-tokens", type=_ints, default=[256, 576], help="baseline L values")
    p.add_argument(
        "--e2e-text-tokens", type=_ints, default=[32], help="C values of the whole-path timing"
    )
    p.add_argument("--decode-batches", type=_ints, default=[1, 8])
    p.add_argument("--decode-steps", type=int, default=16, help="new tokens timed per decode run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--peak-sizes", type=_ints, default=[256, 512, 1024, 2048], help="GEMM sweep sizes"
    )
    contention.add_contention_args(p)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--no-profile", action="store_true", help="skip torch.profiler tables")
    p.add_argument("--no-plot", action="store_true")
    return p.parse_args(argv)


class Recorder:
    """Rows of (path, C, L, batch) with timing, counted and paper FLOPs, achieved rate."""

    def __init__(self, peak_gflops: float) -> None:
        self.peak = peak_gflops
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        path: str,
        timing: Timing,
        flops: FlopCount | None,
        *,
        text_tokens: int | None = None,
        visual_tokens: int | None = None,
        batch: int = 1,
        paper_flops: float | None = None,
        tokens_per_call: int | None = None,
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "path": path,
            "text_tokens": text_tokens,
            "visual_tokens": visual_tokens,
            "batch": batch,
            "timing": timing.to_dict(),
            "median_ms": timing.median_s * 1e3,
            "iqr_ms": timing.iqr_s * 1e3,
            "counted_gflop": flops.total / 1e9 if flops else None,
            "counted_by_operator": flops.by_operator if flops else None,
            "paper_gflop": paper_flops / 1e9 if paper_flops is not None else None,
        }
        if flops:
            row.update(rate(flops.total, timing.median_s, self.peak))
        if tokens_per_call:
            row["tokens_per_s"] = tokens_per_call / timing.median_s
        self.rows.append(row)
        return row

    def find(self, path: str, **keys: Any) -> dict[str, Any]:
        for row in self.rows:
            if row["path"] == path and all(row.get(k) == v for k, v in keys.items()):
                return row
        raise KeyError((path, keys))


@torch.inference_mode()
def run_case(
    name: str, args: argparse.Namespace, peak: float, copy_rate: float = float("nan")
) -> dict[str, Any]:
    case = bm.CASES[name]()
    print(f"\n== {case.name}: {case.description}", flush=True)
    pair = bm.build_pair(case)
    vlora, baseline = pair.vlora, pair.baseline
    d, h, k = pair.blocks, pair.hidden, pair.inserted_blocks
    r = case.generator.rank
    rec = Recorder(peak)
    feats = bm.image_features(pair, 1)  # [1, L, d_v] at the generator's L
    profiles: dict[str, Any] = {}

    # --- generator, merge, projector (per image) ---------------------------------------------
    gens = {case.visual_tokens: vlora.generator}
    for length in args.visual_tokens:
        if length not in gens:
            other = PerceptualWeightsGenerator(
                case.generator, vlora.plan.types, k, case.feature_dim, length
            ).eval()
            other.requires_grad_(False)
            gens[length] = other
    gen_feats = {length: bm.image_features(pair, 1, length) for length in gens}
    paths = {f"generator_L{n}": (lambda g=g, f=gen_feats[n]: g(f)) for n, g in gens.items()}
    vlora.set_deltas(feats, torch.ones(1, dtype=torch.bool), 1)
    linears = pair.delta_linears()

    def merge_unmerge() -> None:
        for w in linears:
            w.merge()
        for w in linears:
            w.unmerge()

    paths["merge"] = merge_unmerge
    key_l = max(args.visual_tokens)
    proj_feats = bm.image_features(pair, 1, key_l)
    paths[f"projector_L{key_l}"] = lambda: baseline.projector(proj_feats)
    timings = time_interleaved(paths, 3 * args.repeats, args.warmup)  # cheap parts
    for length, gen in gens.items():
        arch = dict(case.arch)
        formula = generator_flops(case.generator, _vision_with(case, length), arch, k)
        rec.add(
            f"generator_L{length}",
            timings[f"generator_L{length}"],
            count_flops(lambda g=gen, n=length: g(gen_feats[n])),
            visual_tokens=length,
            paper_flops=float(formula),
        )
    rec.add(
        "merge",
        timings["merge"],
        count_flops(merge_unmerge),
        paper_flops=float(24 * k * r * h**2 + 12 * k * h**2),
    )
    rec.add(
        f"projector_L{key_l}",
        timings[f"projector_L{key_l}"],
        count_flops(paths[f"projector_L{key_l}"]),
        visual_tokens=key_l,
    )
    vlora.clear_deltas()

    # --- prefill per C: VLoRA merged vs baseline at each L (interleaved) ---------------------
    vlora.merge(image_features=feats)
    for c in args.text_tokens:
        ids = bm.text_ids(pair, 1, c)
        embeds = {n: bm.embeddings(pair, 1, n + c) for n in args.visual_tokens}
        paths = {"vlora_prefill_merged": lambda ids=ids: vlora.llm(input_ids=ids, logits_to_keep=1)}
        for n, emb in embeds.items():
            paths[f"baseline_prefill_L{n}"] = lambda emb=emb: baseline.llm(
                inputs_embeds=emb, logits_to_keep=1
            )
        timings = time_interleaved(
            paths, args.repeats, args.warmup, calls_per_round={"vlora_prefill_merged": 3}
        )
        rec.add(
            "vlora_prefill_merged",
            timings["vlora_prefill_merged"],
            count_flops(paths["vlora_prefill_merged"]),
            text_tokens=c,
            paper_flops=24 * c * d * h**2 + 4 * c**2 * d * h,
        )
        for n in args.visual_tokens:
            rec.add(
                "baseline_prefill",
                timings[f"baseline_prefill_L{n}"],
                count_flops(paths[f"baseline_prefill_L{n}"]),
                text_tokens=c,
                visual_tokens=n,
                paper_flops=input_space_flops(d, h, c, n),
            )
        _print_prefill(rec, c, args.visual_tokens)
        if c == KEY_TEXT_TOKENS and not args.no_profile:
            profiles["vlora_prefill_merged_C32"] = top_ops(paths["vlora_prefill_merged"])
            key_l = f"baseline_prefill_L{max(args.visual_tokens)}"
            profiles[f"{key_l}_C32"] = top_ops(paths[key_l])
    vlora.unmerge()

    # --- prefill, factorised (deltas as branches; what training and batched inference run) ---
    vlora.set_deltas(feats, torch.ones(1, dtype=torch.bool), 1)
    for c in args.text_tokens:
        ids = bm.text_ids(pair, 1, c)
        fn = lambda ids=ids: vlora.llm(input_ids=ids, logits_to_keep=1)  # noqa: E731
        timing = time_interleaved({"f": fn}, 3 * args.repeats, args.warmup)["f"]
        rec.add(
            "vlora_prefill_factorised",
            timing,
            count_flops(fn),
            text_tokens=c,
            paper_flops=vlora_flops(d, h, c, k, r, mode="training"),
        )
    vlora.clear_deltas()

    # --- whole paths through the models' forward ----------------------------------------------
    for c in args.e2e_text_tokens:
        ids = bm.with_placeholder(bm.text_ids(pair, 1, c))
        key_l = max(args.visual_tokens)
        base_feats = bm.image_features(pair, 1, key_l)

        def vlora_e2e(ids: torch.Tensor = ids) -> None:
            with vlora.merged(image_features=feats):
                vlora(input_ids=ids, logits_to_keep=1)

        def baseline_e2e(ids: torch.Tensor = ids, feats_l: torch.Tensor = base_feats) -> None:
            baseline(input_ids=ids, image_features=feats_l, logits_to_keep=1)

        timings = time_interleaved(
            {"vlora_e2e": vlora_e2e, "baseline_e2e": baseline_e2e},
            args.repeats,
            args.warmup,
            calls_per_round={"vlora_e2e": 3},
        )
        rec.add("vlora_e2e", timings["vlora_e2e"], count_flops(vlora_e2e), text_tokens=c)
        rec.add(
            "baseline_e2e",
            timings["baseline_e2e"],
            count_flops(baseline_e2e),
            text_tokens=c,
            visual_tokens=key_l,
        )
        if c == KEY_TEXT_TOKENS and not args.no_profile:
            profiles["vlora_e2e_C32"] = top_ops(vlora_e2e)

    # --- decode ---------------------------------------------------------------------------------
    steps, prompt = args.decode_steps, KEY_TEXT_TOKENS
    for batch in args.decode_batches:
        if batch == 1:
            vlora.merge(image_features=feats)
            mode = "merged"
        else:
            vlora.set_deltas(
                bm.image_features(pair, batch), torch.ones(batch, dtype=torch.bool), batch
            )
            mode = "factorised"
        loops = {f"vlora_decode_{mode}": bm.DecodeLoop(vlora.llm, batch, prompt, steps)}
        for n in args.visual_tokens:
            loops[f"baseline_decode_L{n}"] = bm.DecodeLoop(baseline.llm, batch, n + prompt, steps)
        timings = time_interleaved(
            {key: loop.run for key, loop in loops.items()},
            args.repeats,
            args.warmup,
            setups={key: loop.reset for key, loop in loops.items()},
        )
        for key, loop in loops.items():
            loop.reset()
            one = count_flops(lambda loop=loop: loop.step(loop.first))
            one.total *= steps  # per run of `steps` tokens (each step's count differs by <1%)
            one.by_operator = {op: n * steps for op, n in one.by_operator.items()}
            length = None if key.startswith("vlora") else int(key.rsplit("L", 1)[1])
            rec.add(
                key.rsplit("_L", 1)[0] if length else key,
                timings[key],
                one,
                text_tokens=prompt,
                visual_tokens=length,
                batch=batch,
                tokens_per_call=batch * steps,
            )
        if mode == "merged":
            vlora.unmerge()
        else:
            vlora.clear_deltas()
        _print_decode(rec, batch)
    return {
        "case": case.name,
        "description": case.description,
        "shape": {"d": d, "h": h, "k": k, "r": r, "generator": case.generator.model_dump()},
        "rows": rec.rows,
        "summary": summarize_case(rec, args, _linear_weight_bytes(baseline.llm), copy_rate),
        "profiles": profiles,
    }


def _vision_with(case: bm.BenchCase, length: int) -> Any:
    cfg = case.model_config().vision
    side = 14 * round(length**0.5)
    return cfg.model_copy(update={"image_size": side})  # num_patches = length


def _linear_weight_bytes(llm: torch.nn.Module) -> int:
    """Bytes of every Linear weight (lm_head included): what one forward streams from memory."""
    return sum(
        m.weight.numel() * m.weight.element_size()
        for m in llm.modules()
        if isinstance(m, torch.nn.Linear)
    )


def where_time_goes(
    rec: Recorder, args: argparse.Namespace, weight_bytes: int, copy_rate: float
) -> dict[str, Any]:
    """Batch-1 prefill at C=32 against two floors: FLOPs at the GEMM peak, and streaming every
    weight once at the measured copy rate; plus a one-token forward (a decode step)."""
    v = rec.find("vlora_prefill_merged", text_tokens=KEY_TEXT_TOKENS)
    b = rec.find(
        "baseline_prefill", text_tokens=KEY_TEXT_TOKENS, visual_tokens=max(args.visual_tokens)
    )
    out = {
        "weights_mb": weight_bytes / 1e6,
        "copy_gb_per_s": copy_rate,
        "weight_streaming_floor_ms": weight_bytes / (copy_rate * 1e9) * 1e3,
        "vlora_prefill_ms": v["median_ms"],
        "vlora_flop_floor_ms": v["counted_gflop"] / rec.peak * 1e3,
        "baseline_prefill_ms": b["median_ms"],
        "baseline_flop_floor_ms": b["counted_gflop"] / rec.peak * 1e3,
    }
    steps = [r for r in rec.rows if r["path"] == "vlora_decode_merged" and r["batch"] == 1]
    if steps:
        out["one_token_forward_ms"] = steps[0]["median_ms"] / args.decode_steps
    return out


def summarize_case(
    rec: Recorder,
    args: argparse.Namespace,
    weight_bytes: int = 0,
    copy_rate: float = float("nan"),
) -> dict[str, Any]:
    """Ratios VLoRA/baseline per C and L, the claim at C=32/L=576, and the whole-path split."""
    out: dict[str, Any] = {"prefill_ratio": {}}
    if KEY_TEXT_TOKENS in args.text_tokens:
        out["where_time_goes_C32"] = where_time_goes(rec, args, weight_bytes, copy_rate)
    for c in args.text_tokens:
        v = rec.find("vlora_prefill_merged", text_tokens=c)
        for n in args.visual_tokens:
            b = rec.find("baseline_prefill", text_tokens=c, visual_tokens=n)
            out["prefill_ratio"][f"C{c}_L{n}"] = {
                "time": v["median_ms"] / b["median_ms"],
                "counted_flops": v["counted_gflop"] / b["counted_gflop"],
                "paper_flops": v["paper_gflop"] / b["paper_gflop"],
            }
    key = f"C{KEY_TEXT_TOKENS}_L{KEY_VISUAL_TOKENS}"
    if key in out["prefill_ratio"]:
        ratio = out["prefill_ratio"][key]["time"]
        out["claim"] = {
            "what": "VLoRA LLM prefill (merged) / baseline prefill at C=32, L=576",
            "ratio": ratio,
            "limit": CLAIM_MAX_RATIO,
            "holds": ratio <= CLAIM_MAX_RATIO,
        }
    if KEY_TEXT_TOKENS in args.e2e_text_tokens and key in out["prefill_ratio"]:
        gen = rec.find("generator_L576")["median_ms"] if _has(rec, "generator_L576") else None
        merge = rec.find("merge")["median_ms"]
        prefill = rec.find("vlora_prefill_merged", text_tokens=KEY_TEXT_TOKENS)["median_ms"]
        base = rec.find("baseline_prefill", text_tokens=KEY_TEXT_TOKENS, visual_tokens=576)
        proj = rec.find("projector_L576")["median_ms"]
        e2e_v = rec.find("vlora_e2e", text_tokens=KEY_TEXT_TOKENS)["median_ms"]
        e2e_b = rec.find("baseline_e2e", text_tokens=KEY_TEXT_TOKENS)["median_ms"]
        parts = (gen or 0.0) + merge + prefill
        out["end_to_end_C32_L576"] = {
            "vlora_components_ms": {"generator": gen, "merge": merge, "prefill": prefill},
            "vlora_sum_of_components_ms": parts,
            "baseline_components_ms": {"projector": proj, "prefill": base["median_ms"]},
            "ratio_sum_of_components": parts / (proj + base["median_ms"]),
            "vlora_measured_ms": e2e_v,
            "baseline_measured_ms": e2e_b,
            "ratio_measured": e2e_v / e2e_b,
        }
    return out


def _has(rec: Recorder, path: str) -> bool:
    return any(row["path"] == path for row in rec.rows)


def _print_prefill(rec: Recorder, c: int, lengths: list[int]) -> None:
    v = rec.find("vlora_prefill_merged", text_tokens=c)
    text = f"C={c:4d}  vlora merged {v['median_ms']:8.1f} ms"
    for n in lengths:
        b = rec.find("baseline_prefill", text_tokens=c, visual_tokens=n)
        text += f" | baseline L={n} {b['median_ms']:8.1f} ms (ratio {v['median_ms'] / b['median_ms']:.3f})"
    print(text, flush=True)


def _print_decode(rec: Recorder, batch: int) -> None:
    rows = [r for r in rec.rows if r["batch"] == batch and "decode" in r["path"]]
    print(
        f"decode batch {batch}: "
        + " | ".join(
            f"{r['path']} L={r['visual_tokens']} {r['tokens_per_s']:.1f} tok/s" for r in rows
        ),
        flush=True,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    apply_offline_defaults()
    args = parse_args(argv)
    set_threads(args.threads)
    idle = contention.apply_contention_args(args)
    peak = matmul_peak(sizes=args.peak_sizes)
    print(
        f"fp32 GEMM peak: {peak['best_gflops']:.1f} GFLOP/s ({peak['gflops_by_size']})", flush=True
    )
    bandwidth = memory_bandwidth(64 if max(args.peak_sizes) < 1024 else 256)
    print(f"copy rate (read + write): {bandwidth['copy_gb_per_s']:.1f} GB/s", flush=True)
    cases = [
        run_case(name.strip(), args, peak["best_gflops"], bandwidth["copy_gb_per_s"])
        for name in args.cases.split(",")
    ]
    result = {
        "benchmark": NAME,
        "matmul_peak": peak,
        "idle_check": idle,
        "contention_guard": contention.GUARD.to_dict() if contention.GUARD else None,
        "cpu_busy_fraction_after": contention.cpu_busy_fraction(),
        "memory_bandwidth": bandwidth,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "cases": cases,
        "machine_load_after": machine_info()["load_average_1_5_15"],
    }
    text = llm_cost_report.markdown(result)
    contention.GUARD = None  # the guard belongs to this run only
    json_path, md_path = write_results(args.out, NAME, result, text)
    if not args.no_plot:
        llm_cost_report.plot(result, Path(args.out) / f"{NAME}.png")
    for case in cases:
        if "claim" in case["summary"]:
            cl = case["summary"]["claim"]
            print(f"{case['case']}: {cl['what']} = {cl['ratio']:.3f} (limit {cl['limit']})")
    print(f"wrote {json_path} and {md_path}")
    return result


if __name__ == "__main__":
    main()
