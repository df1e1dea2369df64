"""Generator and merge costs, and when to merge (answer length, batch size).

    python -m benchmarks.merge_crossover                # both cases, ~4 min on 2 cores
    python -m benchmarks.merge_crossover --plot-from benchmarks/results/merge_crossover.json

One image, batch 1. Merged: pay the merge once (k·|linear types| products W_v·W_s of
in×r×out, plus weight-sized adds and copies), then prefill and decode at base-LLM cost (the
parallel "m" branch stays factorised: it has no weight to merge into). Factorised: no merge, but
the low-rank branches run at every token. With measured
    T_merge            merge + unmerge (unmerge is a pointer swap)
    P_m(C), P_f(C)     prefill of C prompt tokens, merged / factorised
    t_m, t_f           one decode step, merged / factorised
the two costs of n new tokens are T_merge + P_m(C) + n·t_m and P_f(C) + n·t_f, equal at
    n* = (T_merge + P_m(C) − P_f(C)) / (t_f − t_m).
The script measures those components (interleaved), computes n*, and checks it against
`VLoRAModel.generate` run end to end in both modes for several n.

Batch B > 1 cannot be merged (one weight per image): batched factorised generation of B images
is compared with B sequential merged single-image generations (each: generator, merge,
generate, unmerge), measured as such.

Writes benchmarks/results/merge_crossover.{json,md,png} (drawn by
benchmarks/merge_crossover_report.py).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch

from benchmarks import contention, merge_crossover_report
from benchmarks import models as bm
from benchmarks.flops import count_flops, matmul_peak
from benchmarks.machine import machine_info, set_threads
from benchmarks.results_io import DEFAULT_OUT, write_results
from benchmarks.timing import time_interleaved
from vlora.model import MERGE_MIN_NEW_TOKENS
from vlora.utils.env import apply_offline_defaults

NAME = "merge_crossover"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.merge_crossover",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--cases", default="smollm2,llama7b-h512")
    p.add_argument("--prompt-tokens", type=_ints, default=[32, 512], help="C values (prefill)")
    p.add_argument("--decode-steps", type=int, default=32, help="steps per decode timing")
    p.add_argument(
        "--new-tokens", type=_ints, default=[1, 4, 16, 64], help="n of the end-to-end check"
    )
    p.add_argument("--batches", type=_ints, default=[1, 2, 4, 8])
    p.add_argument("--batch-new-tokens", type=int, default=16, help="n of the batch comparison")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--e2e-repeats", type=int, default=3)
    p.add_argument("--branch-repeats", type=int, default=20, help="repeats of the short parts")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--peak-sizes", type=_ints, default=[256, 512, 1024, 2048], help="GEMM sweep sizes"
    )
    contention.add_contention_args(p)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--plot-from", default=None, help="only redraw <json>'s PNG beside it")
    return p.parse_args(argv)


def crossover_tokens(
    t_merge: float, prefill_merged: float, prefill_fact: float, step_merged: float, step_fact: float
) -> float:
    """n* where merging starts to pay (seconds in, tokens out); inf if it never does, 0 if it
    always does."""
    fixed = t_merge + prefill_merged - prefill_fact
    per_token = step_fact - step_merged
    if fixed <= 0:
        return 0.0
    if per_token <= 0:
        return math.inf
    return fixed / per_token


def _generate_fn(pair: bm.BenchPair, ids: torch.Tensor, feats: torch.Tensor, mode: str, n: int):
    tok = pair.vlora.tokenizer
    kwargs = {
        "max_new_tokens": n,
        "min_new_tokens": n,
        "do_sample": False,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": None,
    }

    def run() -> torch.Tensor:
        return pair.vlora.generate(ids, image_features=feats, delta_mode=mode, **kwargs)

    return run


def branch_cost_fn(linears: list[Any], tokens: int) -> Any:
    """The low-rank branches of `linears` on [1, T, in] inputs, added to a base output: the
    work a factorised forward does on top of a merged one (factors must be set)."""
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(1, tokens, w.in_features, generator=gen) for w in linears]
    bases = [torch.zeros(1, tokens, w.out_features) for w in linears]

    def run() -> None:
        for w, x, y in zip(linears, inputs, bases, strict=True):
            torch.add(y, w.delta(x))

    return run


@torch.inference_mode()
def run_case(name: str, args: argparse.Namespace, peak: float) -> dict[str, Any]:
    case = bm.CASES[name]()
    print(f"\n== {case.name}: {case.description}", flush=True)
    pair = bm.build_pair(case)
    vlora = pair.vlora
    feats = bm.image_features(pair, 1)
    out: dict[str, Any] = {"case": case.name, "description": case.description}

    # --- components ------------------------------------------------------------------------
    vlora.set_deltas(feats, torch.ones(1, dtype=torch.bool), 1)
    linears = pair.delta_linears()

    def merge_unmerge() -> None:
        for w in linears:
            w.merge()
        for w in linears:
            w.unmerge()

    # The merged model skips exactly the low-rank branches of these linears (the parallel "m"
    # branch runs in both modes), so their cost on T tokens is what factorised adds: timed in
    # isolation it is far less noisy than a difference of two whole decode steps.
    branch_fns = {f"branches_T{t}": branch_cost_fn(linears, t) for t in (1, *args.prompt_tokens)}
    comp = time_interleaved(
        {"generator": lambda: vlora.compute_factors(feats), "merge": merge_unmerge, **branch_fns},
        args.branch_repeats,
        args.warmup,
    )
    components: dict[str, Any] = {
        "generator": comp["generator"].to_dict(),
        "merge": comp["merge"].to_dict(),
        "branches": {key: comp[key].to_dict() for key in branch_fns},
        "merge_counted_gflop": count_flops(merge_unmerge).total / 1e9,
        "merged_linears": len(linears),
        "prefill": {},
    }
    vlora.clear_deltas()
    # Prefill and decode, merged vs factorised, round-robin: the untimed set-up of each path
    # switches the model's state (merge or set factors), so both modes see the same load.
    modes = bm.DeltaModes(pair, feats)
    loop = bm.DecodeLoop(vlora.llm, 1, args.prompt_tokens[0], args.decode_steps)
    fns: dict[str, Any] = {}
    setups: dict[str, Any] = {}
    for mode in ("merged", "factorised"):
        switch = getattr(modes, mode)
        for c in args.prompt_tokens:
            ids_c = bm.text_ids(pair, 1, c)
            fns[f"prefill_C{c}_{mode}"] = lambda ids=ids_c: vlora.llm(
                input_ids=ids, logits_to_keep=1
            )
            setups[f"prefill_C{c}_{mode}"] = switch
        fns[f"decode_{mode}"] = loop.run
        setups[f"decode_{mode}"] = lambda switch=switch: (switch(), loop.reset())
    t = time_interleaved(fns, args.repeats, args.warmup, setups=setups)
    modes.clear()
    prefill = {
        m: {c: t[f"prefill_C{c}_{m}"] for c in args.prompt_tokens} for m in ("merged", "factorised")
    }
    steps = {m: t[f"decode_{m}"] for m in ("merged", "factorised")}
    per_step = {m: steps[m].median_s / args.decode_steps for m in steps}
    components["decode_step_ms"] = {m: v * 1e3 for m, v in per_step.items()}
    components["decode_runs"] = {m: steps[m].to_dict() for m in steps}
    crossover: dict[str, float] = {}
    for c in args.prompt_tokens:
        components["prefill"][f"C{c}"] = {m: prefill[m][c].to_dict() for m in prefill}
        crossover[f"C{c}"] = crossover_tokens(
            comp["merge"].median_s,
            prefill["merged"][c].median_s,
            prefill["factorised"][c].median_s,
            per_step["merged"],
            per_step["factorised"],
        )
    # The component model: n* = (T_merge − branches(C)) / branches(1).
    t_merge, per_token = comp["merge"].median_s, comp["branches_T1"].median_s
    model = {
        f"C{c}": max(0.0, (t_merge - comp[f"branches_T{c}"].median_s) / per_token)
        for c in args.prompt_tokens
    }
    out["components"] = components
    out["crossover_new_tokens"] = model
    out["crossover_from_whole_steps"] = crossover
    print(
        f"generator {comp['generator'].median_s * 1e3:.1f} ms, merge {comp['merge'].median_s * 1e3:.2f} ms, "
        f"decode step merged {per_step['merged'] * 1e3:.2f} / factorised {per_step['factorised'] * 1e3:.2f} ms, "
        f"branches per token {per_token * 1e3:.3f} ms, n* = {model} (from whole steps: {crossover})",
        flush=True,
    )

    # --- end-to-end check through VLoRAModel.generate ---------------------------------------
    ids = bm.text_ids(pair, 1, args.prompt_tokens[0])
    e2e: dict[str, Any] = {}
    for n in args.new_tokens:
        fns = {mode: _generate_fn(pair, ids, feats, mode, n) for mode in ("merged", "factorised")}
        t = time_interleaved(fns, args.e2e_repeats, args.warmup)
        e2e[str(n)] = {mode: t[mode].to_dict() for mode in t}
        print(
            f"generate n={n:3d}: merged {t['merged'].median_s * 1e3:8.1f} ms | factorised {t['factorised'].median_s * 1e3:8.1f} ms",
            flush=True,
        )
    out["generate_batch1"] = e2e

    # --- batch: batched factorised vs sequential merged ------------------------------------------
    n = args.batch_new_tokens
    batch: dict[str, Any] = {}
    for b in args.batches:
        ids_b = bm.text_ids(pair, b, args.prompt_tokens[0])
        feats_b = bm.image_features(pair, b)
        batched = _generate_fn(pair, ids_b, feats_b, "factorised", n)
        singles = [
            _generate_fn(pair, ids_b[i : i + 1], feats_b[i : i + 1], "merged", n) for i in range(b)
        ]

        def sequential(singles: list = singles) -> None:
            for fn in singles:
                fn()

        t = time_interleaved(
            {"batched_factorised": batched, "sequential_merged": sequential},
            args.e2e_repeats,
            args.warmup,
        )
        batch[str(b)] = {k: v.to_dict() for k, v in t.items()}
        print(
            f"batch {b}: batched factorised {t['batched_factorised'].median_s * 1e3:8.1f} ms | {b} × merged {t['sequential_merged'].median_s * 1e3:8.1f} ms",
            flush=True,
        )
    out["batch"] = {"new_tokens": n, "results": batch}
    out["peak_gflops"] = peak
    return out


def recommend(cases: list[dict[str, Any]], prompt_tokens: int) -> dict[str, Any]:
    """The library default: the largest measured n* at the shortest prompt, rounded up."""
    values = [c["crossover_new_tokens"][f"C{prompt_tokens}"] for c in cases]
    finite = [v for v in values if math.isfinite(v)]
    worst = max(finite) if finite else math.inf
    return {
        "per_case": {c["case"]: c["crossover_new_tokens"] for c in cases},
        "recommended_merge_min_new_tokens": math.ceil(worst) if math.isfinite(worst) else None,
        "library_value": MERGE_MIN_NEW_TOKENS,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    apply_offline_defaults()
    args = parse_args(argv)
    if args.plot_from:
        source = Path(args.plot_from)
        data = json.loads(source.read_text())
        print(f"wrote {merge_crossover_report.plot(data, source.with_suffix('.png'))}")
        return data
    set_threads(args.threads)
    idle = contention.apply_contention_args(args)
    peak = matmul_peak(sizes=args.peak_sizes)
    print(f"fp32 GEMM peak: {peak['best_gflops']:.1f} GFLOP/s", flush=True)
    cases = [run_case(n.strip(), args, peak["best_gflops"]) for n in args.cases.split(",")]
    result = {
        "benchmark": NAME,
        "matmul_peak": peak,
        "idle_check": idle,
        "contention_guard": contention.GUARD.to_dict() if contention.GUARD else None,
        "cpu_busy_fraction_after": contention.cpu_busy_fraction(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "cases": cases,
        "recommendation": recommend(cases, args.prompt_tokens[0]),
        "machine_load_after": machine_info()["load_average_1_5_15"],
    }
    contention.GUARD = None  # the guard belongs to this run only
    json_path, md_path = write_results(
        args.out, NAME, result, merge_crossover_report.markdown(result)
    )
    if not args.no_plot:
        merge_crossover_report.plot(result, Path(args.out) / f"{NAME}.png")
    print(f"recommended MERGE_MIN_NEW_TOKENS: {result['recommendation']}")
    print(f"wrote {json_path} and {md_path}")
    return result


if __name__ == "__main__":
    main()
