"""The Markdown report and the plot of gpu_h200.py's results (also usable on their JSON).

`markdown(data)` and `plot(data, path)` take the dict that gpu_h200.py writes to
`results/gpu_h200.json`, so a committed JSON re-renders without a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.report import md_table, pyplot, save_figure


def markdown(data: dict[str, Any]) -> str:
    s = data["sections"]
    parts = [
        f"# VLoRA vs input-space baseline on a GPU{' (DRY RUN, tiny model on CPU)' if data['dry_run'] else ''}"
    ]
    if "case" in data:
        parts.append(data["case"])
    if "peak" in s:
        g = s["peak"]["gemm"]
        parts.append(
            f"GEMM peak ({g['dtype']}): {g['best_gflops'] / 1e3:.1f} TFLOP/s at {g['best_size']}; "
            f"copy {s['peak']['copy_gb_per_s_read_plus_write']:.0f} GB/s (read + write)."
        )
    if "prefill" in s:
        rows = [
            [
                r["path"],
                r.get("batch", 1),
                r.get("text_tokens", "–"),
                r.get("visual_tokens", "–"),
                r["median_ms"],
                r["iqr_ms"],
                r["counted_gflop"],
                r.get("paper_gflop", float("nan")),
                r["achieved_gflops_per_s"] / 1e3,
                r["percent_of_peak"],
            ]
            for r in s["prefill"]["rows"]
        ]
        parts.append(
            "Eager prefill (batch 1: VLoRA merged; batch > 1: VLoRA factorised, one image per sample):\n\n"
            + md_table(
                [
                    "path",
                    "batch",
                    "C",
                    "L",
                    "median ms",
                    "IQR ms",
                    "counted GFLOP",
                    "paper GFLOP",
                    "TFLOP/s",
                    "% of peak",
                ],
                rows,
            )
        )
        parts.append(
            "Time ratio VLoRA merged / baseline: "
            + ", ".join(
                f"{k} {v:.3f}" for k, v in s["prefill"]["time_ratio_vlora_over_baseline"].items()
            )
        )
    if "crossover" in s:
        x = s["crossover"]
        parts.append(
            f"Crossover (batch 1, prompt {x['prompt_tokens']}): merge {x['timings_ms']['merge']:.3f} ms; "
            f"decode step merged {x['decode_step_ms']['merged']:.3f} ms, factorised "
            f"{x['decode_step_ms']['factorised']:.3f} ms, factorised batch 8 "
            f"{x['decode_step_factorised_b8_ms']:.3f} ms; n* = {x['crossover_new_tokens']}."
        )
    if "graphs" in s and "rows" in s["graphs"]:
        rows = [
            [
                r["path"],
                r.get("text_tokens", "–"),
                r.get("visual_tokens", "–"),
                r["median_ms"],
                r["counted_gflop"],
                r["achieved_gflops_per_s"] / 1e3,
                r["percent_of_peak"],
            ]
            for r in s["graphs"]["rows"]
        ]
        parts.append(
            "Batch-1 prefill replayed from CUDA graphs (no host overhead):\n\n"
            + md_table(
                ["path", "C", "L", "median ms", "counted GFLOP", "TFLOP/s", "% of peak"], rows
            )
            + "\n\nTime ratio VLoRA merged / baseline: "
            + ", ".join(
                f"{k} {v:.3f}" for k, v in s["graphs"]["time_ratio_vlora_over_baseline"].items()
            )
        )
    if "profile" in s and "skipped" not in s["profile"]:
        rows = [
            [
                k,
                v["wall_ms"],
                v["gpu_kernel_ms"],
                v["gpu_busy_percent"],
                v["top_kernels"][0]["op"] if v["top_kernels"] else "–",
            ]
            for k, v in s["profile"].items()
        ]
        parts.append(
            "Where batch-1 time goes (torch.profiler):\n\n"
            + md_table(["path", "wall ms", "GPU kernel ms", "GPU busy %", "top kernel"], rows)
        )
    if "train" in s:
        t = s["train"]
        rows = [
            [
                run["micro_batch"],
                m,
                run[m]["engine"],
                run[m]["step_ms"],
                run[m]["phase_ms"]["forward"],
                run[m]["phase_ms"]["backward"],
                run[m]["phase_ms"]["optimizer"],
                run[m]["samples_per_s"],
                run[m]["text_tokens_per_s"],
                run[m].get("peak_memory_gib", float("nan")),
                run[m]["trainable_params"],
            ]
            for run in t["runs"]
            for m in ("vlora", "baseline")
        ]
        parts.append(
            f"Training steps (captions of {t['caption_tokens']} tokens, L={t['visual_tokens']}, "
            f"LLM {'trainable' if t['train_llm'] else 'frozen'}):\n\n"
            + md_table(
                [
                    "micro batch",
                    "model",
                    "engine",
                    "step ms",
                    "fwd ms",
                    "bwd ms",
                    "opt ms",
                    "samples/s",
                    "text tokens/s",
                    "peak GiB",
                    "trainable params",
                ],
                rows,
            )
            + "\n\nVLoRA speed-up (baseline step / VLoRA step): "
            + ", ".join(
                f"micro batch {r['micro_batch']}: {r['speedup_vlora_over_baseline']:.2f}×"
                for r in t["runs"]
            )
            + "".join(f"\n\nFailed: {e}" for e in t.get("errors", []))
        )
    if data["errors"]:
        parts.append(
            "Errors:\n\n"
            + "\n".join(f"- {k}: {v.splitlines()[0]}" for k, v in data["errors"].items())
        )
    return "\n\n".join(parts)


def plot(data: dict[str, Any], path: Path) -> Path | None:
    """Prefill time vs C (eager batch 1, CUDA graphs batch 1, eager batch B) and the ratios."""
    s = data["sections"]
    if "prefill" not in s:
        return None
    plt = pyplot()
    fig, (lat, ratio) = plt.subplots(1, 2, figsize=(12, 4.5))
    n = max(data["settings"]["visual_tokens"])
    series = []
    for key, label in (("prefill", "eager"), ("graphs", "CUDA graph")):
        rows = s.get(key, {}).get("rows", [])
        for batch in sorted({r.get("batch", 1) for r in rows if "text_tokens" in r}):
            v = {
                r["text_tokens"]: r
                for r in rows
                if r["path"].startswith("vlora_prefill") and r.get("batch", 1) == batch
            }
            b = {
                r["text_tokens"]: r
                for r in rows
                if r["path"].startswith("baseline_prefill")
                and r.get("batch", 1) == batch
                and r.get("visual_tokens") == n
            }
            cs = sorted(set(v) & set(b))
            if cs:
                series.append((f"{label}, batch {batch}", cs, v, b))
    for i, (label, cs, v, b) in enumerate(series):
        color = f"C{i}"
        lat.plot(cs, [v[c]["median_ms"] for c in cs], "o-", color=color, label=f"VLoRA, {label}")
        lat.plot(
            cs,
            [b[c]["median_ms"] for c in cs],
            "s--",
            color=color,
            label=f"baseline L={n}, {label}",
        )
        ratio.plot(
            cs,
            [v[c]["median_ms"] / b[c]["median_ms"] for c in cs],
            "o-",
            color=color,
            label=f"time, {label}",
        )
    if series:
        _, cs, v, b = series[0]
        ratio.plot(
            cs,
            [v[c]["counted_gflop"] / b[c]["counted_gflop"] for c in cs],
            "kx:",
            label="counted FLOPs",
        )
    for ax in (lat, ratio):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("text tokens C")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    lat.set_yscale("log")
    lat.set_ylabel("prefill ms (median)")
    lat.set_title(f"{data.get('case', '').split(':')[0]}: prefill, L={n}")
    ratio.set_ylabel(f"VLoRA / baseline (L={n})")
    ratio.set_title("ratio")
    fig.tight_layout()
    return save_figure(fig, path)
