"""The Markdown report and the plot of serve_load.py's results (also usable on their JSON).

`markdown(result)` and `plot(result, path)` take the dict that serve_load.py writes to
`results/serve_load.json`, so a committed JSON re-renders without starting a server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.report import md_table, pyplot, save_figure


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Backend: {result['settings']['backend']}; max_tokens {result['settings']['max_tokens']} "
        f"(ignore_eos), up to {result['settings']['requests']} requests or "
        f"{result['settings']['level_seconds']} s per level, closed loop; easy-vqa test images "
        "(64 px PNG, inline) and questions.",
        "",
    ]
    for case in result["cases"]:
        lines += [f"## {case['name']} (L = {case['visual_tokens']})", ""]
        rows = []
        for run in case["runs"]:
            for lv in run["levels"]:
                s = lv["server"]
                rows.append(
                    [
                        run["design"],
                        lv["concurrency"],
                        lv["request_throughput"],
                        lv["output_tokens_per_s"],
                        1000 * lv["ttft_s"]["p50"],
                        1000 * lv["ttft_s"]["p90"],
                        1000 * lv["tpot_s"]["p50"],
                        lv["e2e_s"]["p50"],
                        lv["e2e_s"]["p90"],
                        lv["e2e_s"]["p99"],
                        lv["failures"],
                        lv["prompt_tokens"],
                        s["mean_decode_batch"],
                        s["decode_ms_per_step"],
                        100 * s["engine_busy_share"],
                        s["cache_hit_rate"],
                    ]
                )
        lines.append(
            md_table(
                [
                    "design",
                    "c",
                    "req/s",
                    "out tok/s",
                    "TTFT p50 ms",
                    "TTFT p90 ms",
                    "TPOT p50 ms",
                    "e2e p50 s",
                    "e2e p90 s",
                    "e2e p99 s",
                    "failed",
                    "prompt tok",
                    "mean batch",
                    "ms/decode step",
                    "engine busy %",
                    "cache hits",
                ],
                rows,
            )
        )
        lines.append("")
    lines += ["## Targets", ""]
    lines.append(
        md_table(
            ["case", "check", "value", "met"],
            [
                [c["case"], c["check"], c["value"], "yes" if c["met"] else "**no**"]
                for c in result["checks"]
            ],
        )
    )
    lines += [
        "",
        "Where the time goes: `engine busy %` is the engine's prefill + decode time over the "
        "level's wall time (the rest: HTTP, Ray Serve hops, image encoding, the clients); "
        "`ms/decode step` and `mean batch` are the decode steps the engine ran; prompt tokens are "
        "the positions the LLM reads (the baseline's L visual tokens included).",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    cases = result["cases"]
    fig, axes = plt.subplots(2, len(cases), figsize=(6 * len(cases), 8), squeeze=False)
    for col, case in enumerate(cases):
        for run in case["runs"]:
            cs = [lv["concurrency"] for lv in run["levels"]]
            axes[0][col].plot(
                cs, [lv["output_tokens_per_s"] for lv in run["levels"]], "o-", label=run["design"]
            )
            axes[1][col].plot(
                cs, [1000 * lv["ttft_s"]["p50"] for lv in run["levels"]], "o-", label=run["design"]
            )
        axes[0][col].set_title(f"{case['name']} (L={case['visual_tokens']})")
        axes[0][col].set_ylabel("output tokens/s")
        axes[1][col].set_ylabel("TTFT p50 (ms)")
        for row in (0, 1):
            axes[row][col].set_xscale("log", base=2)
            axes[row][col].set_xlabel("concurrency")
            axes[row][col].legend()
    save_figure(fig, path)
