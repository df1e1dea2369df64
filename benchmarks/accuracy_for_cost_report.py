"""The Markdown report and the plot of accuracy_for_cost.py's results (also usable on their JSON).

`markdown(result)` and `plot(result, path)` take the dict that accuracy_for_cost.py writes to
`results/accuracy_for_cost.json`, so a committed JSON re-renders without reading any run. What
both modules need of a result's layout (the eval benchmarks' names, `cost_key`) is defined
here, and accuracy_for_cost.py imports it, so this module imports nothing of the measuring side.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks.report import md_table, pyplot, save_figure

TEST, YORN = "EasyVQA_TEST", "EasyVQA_YORN"


def cost_key(arms: dict[str, dict[str, Any]]) -> str:
    """Training CPU seconds when every run recorded them, else wall seconds."""
    recorded = all(not math.isnan(a["train_cpu_seconds"]["mean"]) for a in arms.values())
    return "train_cpu_seconds" if recorded else "train_seconds"


def _range(s: dict[str, float], digits: int = 1) -> str:
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} [{s['min']:.{digits}f}–{s['max']:.{digits}f}]"


def markdown(result: dict[str, Any]) -> str:
    arms, grid, error = result["arms"], result["grid"], result["sampling_error"]
    headers = [
        "arm",
        "design",
        "runs",
        "EasyVQA_TEST % mean [min–max]",
        "seed std",
        "shape / colour / yes-no %",
        "EasyVQA_YORN (/400)",
        "train s (wall)",
        "train CPU s",
        "eval s",
        "steps pretrain / sft",
        "last pretrain loss",
        "LLM prefill GFLOP/sample (C=32)",
    ]
    rows = []
    for name, a in arms.items():
        cats = a["easyvqa_test_by_category"]
        rows.append(
            [
                name,
                a["design"],
                a["easyvqa_test"]["n"],
                _range(a["easyvqa_test"]),
                a["easyvqa_test"]["std"],
                " / ".join(
                    f"{cats[c]['mean']:.1f}" if c in cats else "–"
                    for c in ("shape", "color", "yes/no")
                ),
                _range(a["easyvqa_yorn"]),
                _range(a["train_seconds"], 0),
                _range(a["train_cpu_seconds"], 0),
                _range(a["eval_seconds"], 0),
                f"{a['steps']['pretrain']} / {a['steps']['sft']}",
                _range(a["pretrain_loss_last"], 3),
                a["llm_prefill_gflop"],
            ]
        )
    run_rows = [
        [
            r["arm"],
            r["design"],
            r["seed"],
            r["easyvqa_test"],
            " / ".join(
                f"{r['easyvqa_test_by_category'].get(c, float('nan')):.1f}"
                for c in ("shape", "color", "yes/no")
            ),
            r["easyvqa_yorn"],
            r["train_seconds"],
            r["train_cpu_seconds"],
            r["pretrain_loss_last"],
            f"{r.get('source', 'workdir')} @ {r.get('reported_at_commit', '?')}",
        ]
        for r in result["runs"]
    ]
    refs = result["no_image_references"]
    goal_lines = [
        f"- {pair}: {g['criterion']}: gap {g['easyvqa_test_gap_points']:+.1f} points at "
        f"{g['train_time_ratio']:.2f}× the training time: **{'met' if g['met'] else 'missed'}**"
        for pair, g in result["goal"].items()
    ]
    diffs = "; ".join(
        f"{pair}: ±{d['easyvqa_test_se']} points (YORN ±{d['easyvqa_yorn_se']})"
        for pair, d in error["differences"].items()
    )
    commands = "\n".join(f"    {r['command']}" for r in result["runs"])
    missing = result.get("missing", [])
    status = (
        [
            f"**Partial: {len(result['runs'])} of {len(grid['arms']) * len(grid['seeds'])} runs "
            "of the grid have finished**; means and goals below are over the finished runs "
            "only. Not yet run (`python -m benchmarks.accuracy_for_cost run` produces them):\n\n"
            + "\n".join(f"- {m['arm']} seed {m['seed']}: `{m['command']}`" for m in missing)
        ]
        if missing
        else []
    )
    return "\n\n".join(
        [
            "# Accuracy for cost: VLoRA vs the input-space baseline (local default)",
            *status,
            f"Config `{grid['config']}`, workdir `{grid['workdir']}`, seeds {grid['seeds']}; "
            "each arm's runs differ only in `seed` (initialisation and data order).",
            md_table(headers, rows),
            "Goal:\n" + "\n".join(goal_lines),
            f"Sampling error of the evaluated images (bootstrap over {error['images'][TEST]} "
            f"test images, {error['bootstrap_samples']} resamples): ±{error['easyvqa_test_run_se']} "
            f"points for one run's EasyVQA_TEST; for the difference of two arms' means on the "
            f"same images: {diffs}. "
            + (
                "Compare it with the seed spread above."
                if any(a["easyvqa_test"]["n"] > 1 for a in arms.values())
                else "Every arm has one run so far: the seed spread, measured before as "
                "several points, is not in these numbers yet."
            ),
            "Without the image: each category's most frequent answer scores "
            f"{_cats(refs['category_majority'])}; answering each question by the majority "
            "answer of its phrasing in easy-vqa's train split (the question alone) scores "
            f"{_cats(refs['phrasing_prior'])}.",
            "## Every run\n\n"
            + md_table(
                [
                    "arm",
                    "design",
                    "seed",
                    "EasyVQA_TEST %",
                    "shape / colour / yes-no %",
                    "EasyVQA_YORN",
                    "train s (wall)",
                    "train CPU s",
                    "last pretrain loss",
                    "from @ commit",
                ],
                run_rows,
            ),
            f"Commands (`run` starts each in turn):\n\n{commands}",
            "Wall seconds are the stages' times from their manifests; training CPU seconds are "
            "the CPU time of the training workers (all threads), the cost measure of the goal "
            "when every run has it, since the machine was shared with other work; LLM prefill GFLOPs are the paper's formulas (vlora.flops) at C = 32 text "
            "tokens and the run's L visual tokens (VLoRA merged: C tokens; baseline: L + C).",
        ]
    )


def _cats(values: dict[str, float]) -> str:
    parts = [f"{k} {v:.1f}" for k, v in values.items() if k != "Overall"]
    return f"{values['Overall']:.1f}% ({', '.join(parts)})"


def plot(result: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    cost = cost_key(result["arms"])
    for (name, arm), colour in zip(result["arms"].items(), colours, strict=False):
        runs = [r for r in result["runs"] if r["arm"] == name]
        for ax, key in zip(axes, ("easyvqa_test", "easyvqa_yorn"), strict=True):
            xs = [r[cost] for r in runs]
            ax.scatter(xs, [r[key] for r in runs], color=colour, alpha=0.6, label=name)
            ax.errorbar(
                arm[cost]["mean"],
                arm[key]["mean"],
                yerr=[[arm[key]["mean"] - arm[key]["min"]], [arm[key]["max"] - arm[key]["mean"]]],
                color=colour,
                marker="D",
                markersize=8,
                capsize=4,
            )
    refs = result["no_image_references"]
    axes[0].axhline(refs["category_majority"]["Overall"], color="grey", ls=":", lw=1)
    axes[0].axhline(refs["phrasing_prior"]["Overall"], color="grey", ls="--", lw=1)
    axes[1].axhline(100, color="grey", ls=":", lw=1)  # one constant answer to every pair
    axes[0].set_ylabel("EasyVQA_TEST exact match (%)")
    axes[1].set_ylabel("EasyVQA_YORN (acc + acc+, /400)")
    for ax in axes:
        label = "CPU seconds" if cost == "train_cpu_seconds" else "wall seconds"
        ax.set_xlabel(f"training {label} (pretrain + sft), 2-core CPU")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_title("dots: runs; diamonds: arm mean, min–max", fontsize=9)
    axes[1].set_title("dotted: a constant answer (100)", fontsize=9)
    return save_figure(fig, path)
