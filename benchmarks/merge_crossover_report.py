"""The Markdown report and the plot of merge_crossover.py's results (also usable on their JSON).

`markdown(result)` and `plot(result, path)` take the dict that merge_crossover.py writes to
`results/merge_crossover.json`, so a committed JSON re-renders without measuring anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.report import md_table, pyplot, save_figure


def markdown(result: dict[str, Any]) -> str:
    parts = ["# Merged vs factorised inference: the crossover"]
    rec = result["recommendation"]
    parts.append(
        f"Library default `MERGE_MIN_NEW_TOKENS` = {rec['library_value']} (vlora/model.py); "
        f"largest measured n* at the shortest prompt = {rec['recommended_merge_min_new_tokens']}."
    )
    for case in result["cases"]:
        comp = case["components"]
        parts.append(f"## {case['case']}\n\n{case['description']}.")
        rows = [
            [
                "generator (per image)",
                comp["generator"]["median_s"] * 1e3,
                comp["generator"]["iqr_s"] * 1e3,
            ],
            [
                f"merge + unmerge ({comp['merged_linears']} linears, {comp['merge_counted_gflop']:.3f} GFLOP)",
                comp["merge"]["median_s"] * 1e3,
                comp["merge"]["iqr_s"] * 1e3,
            ],
            ["decode step, merged", comp["decode_step_ms"]["merged"], float("nan")],
            ["decode step, factorised", comp["decode_step_ms"]["factorised"], float("nan")],
        ]
        for key, p in comp["prefill"].items():
            for mode in ("merged", "factorised"):
                rows.append(
                    [f"prefill {key}, {mode}", p[mode]["median_s"] * 1e3, p[mode]["iqr_s"] * 1e3]
                )
        for key, v in comp["branches"].items():
            rows.append(
                [
                    f"low-rank branches of the merged linears, {key[9:]} tokens",
                    v["median_s"] * 1e3,
                    v["iqr_s"] * 1e3,
                ]
            )
        parts.append(md_table(["component (batch 1)", "median ms", "IQR ms"], rows))
        parts.append(
            "Crossover n* (new tokens from which merging is cheaper), component model "
            "(T_merge − branches(C)) / branches(1): "
            + ", ".join(f"{k}: {v:.1f}" for k, v in case["crossover_new_tokens"].items())
            + "; from whole prefill and decode steps (noisier): "
            + ", ".join(f"{k}: {v:.1f}" for k, v in case["crossover_from_whole_steps"].items())
        )
        gen_rows = [
            [
                n,
                v["merged"]["median_s"] * 1e3,
                v["factorised"]["median_s"] * 1e3,
                "merged" if v["merged"]["median_s"] < v["factorised"]["median_s"] else "factorised",
            ]
            for n, v in case["generate_batch1"].items()
        ]
        parts.append(
            "`VLoRAModel.generate`, batch 1, generator included in both:\n\n"
            + md_table(["new tokens", "merged ms", "factorised ms", "faster"], gen_rows)
        )
        b = case["batch"]
        batch_rows = [
            [
                k,
                v["batched_factorised"]["median_s"] * 1e3,
                v["sequential_merged"]["median_s"] * 1e3,
                v["sequential_merged"]["median_s"] / v["batched_factorised"]["median_s"],
            ]
            for k, v in b["results"].items()
        ]
        parts.append(
            f"Batch of B images, {b['new_tokens']} new tokens each:\n\n"
            + md_table(
                ["B", "batched factorised ms", "B × merged ms", "sequential / batched"], batch_rows
            )
        )
    return "\n\n".join(parts)


def plot(result: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    cases = result["cases"]
    fig, axes = plt.subplots(len(cases), 2, figsize=(11, 4 * len(cases)), squeeze=False)
    for (gen_ax, batch_ax), case in zip(axes, cases, strict=True):
        comp = case["components"]
        c0 = next(iter(comp["prefill"]))
        t_merge = comp["merge"]["median_s"] * 1e3
        pm = comp["prefill"][c0]["merged"]["median_s"] * 1e3
        sm = comp["decode_step_ms"]["merged"]
        ns = [int(n) for n in case["generate_batch1"]]
        grid = list(range(0, max(ns) + 1))
        # component model: factorised = merged path without the merge, plus the branches
        br1 = comp["branches"]["branches_T1"]["median_s"] * 1e3
        br_c = comp["branches"][f"branches_T{c0[1:]}"]["median_s"] * 1e3
        gen_ax.plot(
            grid, [t_merge + pm + n * sm for n in grid], "-", color="C0", label="merged (model)"
        )
        gen_ax.plot(
            grid,
            [pm + br_c + n * (sm + br1) for n in grid],
            "-",
            color="C1",
            label="factorised (model)",
        )
        gen = comp["generator"]["median_s"] * 1e3
        gen_ax.plot(
            ns,
            [case["generate_batch1"][str(n)]["merged"]["median_s"] * 1e3 - gen for n in ns],
            "o",
            color="C0",
            label="merged, generate − generator",
        )
        gen_ax.plot(
            ns,
            [case["generate_batch1"][str(n)]["factorised"]["median_s"] * 1e3 - gen for n in ns],
            "s",
            color="C1",
            label="factorised, generate − generator",
        )
        gen_ax.set_xlabel("new tokens n")
        gen_ax.set_ylabel("ms (batch 1)")
        gen_ax.set_title(f"{case['case']}: n* = {case['crossover_new_tokens'][c0]:.1f} ({c0})")
        gen_ax.legend(fontsize=8)
        gen_ax.grid(True, alpha=0.3)
        bs = [int(b) for b in case["batch"]["results"]]
        res = case["batch"]["results"]
        batch_ax.plot(
            bs,
            [res[str(b)]["batched_factorised"]["median_s"] * 1e3 for b in bs],
            "o-",
            label="batched factorised",
        )
        batch_ax.plot(
            bs,
            [res[str(b)]["sequential_merged"]["median_s"] * 1e3 for b in bs],
            "s-",
            label="B × merged, sequential",
        )
        batch_ax.set_xlabel("images B")
        batch_ax.set_ylabel("ms")
        batch_ax.set_title(f"{case['case']}: {case['batch']['new_tokens']} new tokens per image")
        batch_ax.legend(fontsize=8)
        batch_ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
