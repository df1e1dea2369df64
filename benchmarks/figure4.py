"""The paper's Figure 4 redrawn from the cost model (vlora.flops).

    python -m benchmarks.figure4                        # < 5 s

GFLOPs of LLaVA (input space) and VLoRA vs the number of visual tokens L (left), and the
ratio VLoRA / LLaVA (right), for several text lengths C, at the vicuna7b-clip336 preset's
shapes (d=32, h=4096, k=8, r=64). The paper compares by the training formula (§3.4: "we
compare by the training FLOPs"); the merged-inference formula, which Table 1's 619 GFLOPs
matches, is drawn dotted. The generator is left out, as in the paper; its own cost from the
real module shapes is printed beside.

The figure's C values cannot be read from the paper's text (it holds the caption only); the
defaults are C ∈ {16, 32, 64, 128}. The script checks the paper's anchor points: LLaVA
8027 GFLOPs and VLoRA ≈ 8% of it at C=32, L=576.
Writes benchmarks/results/figure4.{json,md,png}.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.report import md_table, pyplot, save_figure
from benchmarks.results_io import DEFAULT_OUT, write_results
from vlora.flops import cost_for_preset, input_space_flops, vlora_flops
from vlora.presets import get_preset
from vlora.utils.env import apply_offline_defaults

NAME = "figure4"
PRESET = "vicuna7b-clip336"
PAPER_LLAVA_GFLOPS = 8027.0  # Table 1, C=32, L=576
PAPER_VLORA_GFLOPS = 619.0  # Table 1, C=32
PAPER_RATIO = 0.08  # §3.4: "only 8% of LLaVA-v1.5's when the text length is 32"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.figure4",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--text-tokens", type=_ints, default=[16, 32, 64, 128], help="C values")
    p.add_argument("--max-visual-tokens", type=int, default=1024)
    p.add_argument("--step", type=int, default=16, help="spacing of the L grid")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--no-plot", action="store_true")
    return p.parse_args(argv)


def shapes() -> dict[str, int]:
    model = get_preset(PRESET).model
    arch = model.llm.architecture or {}
    d, h = int(arch["num_hidden_layers"]), int(arch["hidden_size"])
    return {"d": d, "h": h, "k": len(model.generator.resolve_blocks(d)), "r": model.generator.rank}


def curves(text_tokens: list[int], visual_grid: list[int]) -> dict[str, Any]:
    """GFLOPs per C over the L grid: LLaVA, VLoRA (training and inference), and the ratios."""
    s = shapes()
    out: dict[str, Any] = {"shapes": s, "visual_tokens": visual_grid, "by_text_tokens": {}}
    for c in text_tokens:
        llava = [input_space_flops(s["d"], s["h"], c, n) / 1e9 for n in visual_grid]
        train = vlora_flops(s["d"], s["h"], c, s["k"], s["r"], mode="training") / 1e9
        infer = vlora_flops(s["d"], s["h"], c, s["k"], s["r"], mode="inference") / 1e9
        out["by_text_tokens"][str(c)] = {
            "llava_gflops": llava,
            "vlora_training_gflops": train,
            "vlora_inference_gflops": infer,
            "ratio_training": [train / v for v in llava],
            "ratio_inference": [infer / v for v in llava],
        }
    return out


def anchor_check() -> dict[str, Any]:
    """The paper's numbers at C=32, L=576, from the cost model."""
    llava = cost_for_preset(PRESET, 32, 576).gflops
    infer = cost_for_preset(PRESET, 32).gflops
    train = cost_for_preset(PRESET, 32, mode="training").gflops
    generator = cost_for_preset(PRESET, 32).generator_gflops
    return {
        "llava_gflops": llava,
        "vlora_inference_gflops": infer,
        "vlora_training_gflops": train,
        "ratio_inference": infer / llava,
        "ratio_training": train / llava,
        "generator_gflops_per_image": generator,
        "paper": {"llava": PAPER_LLAVA_GFLOPS, "vlora": PAPER_VLORA_GFLOPS, "ratio": PAPER_RATIO},
        "matches_paper": abs(llava / PAPER_LLAVA_GFLOPS - 1) < 0.01
        and abs(infer / PAPER_VLORA_GFLOPS - 1) < 0.01
        and round(100 * infer / llava) == 8
        and round(100 * train / llava) == 8,
    }


def markdown(result: dict[str, Any]) -> str:
    a, grid = result["anchor"], result["curves"]["visual_tokens"]
    marks = [n for n in (0, 32, 64, 144, 256, 576, 1024) if n in grid]
    rows = []
    for c, v in result["curves"]["by_text_tokens"].items():
        for n in marks:
            i = grid.index(n)
            rows.append(
                [
                    c,
                    n,
                    v["llava_gflops"][i],
                    v["vlora_training_gflops"],
                    v["vlora_inference_gflops"],
                    v["ratio_training"][i],
                    v["ratio_inference"][i],
                ]
            )
    s = result["curves"]["shapes"]
    return "\n\n".join(
        [
            "# Figure 4 of the paper, from the cost model",
            f"Shapes of `{PRESET}`: d={s['d']}, h={s['h']}, k={s['k']}, r={s['r']}. "
            "LLaVA = 24(L+C)dh² + 4(L+C)²dh; VLoRA training = 24Cdh² + 4C²dh + 24krh² + 12Ckh² + "
            "14Ckh; inference (merged) = 24Cdh² + 4C²dh + 24krh² + 12kh². Generator left out.",
            f"Anchor, C=32, L=576: LLaVA {a['llava_gflops']:.0f} GFLOPs (paper 8027), VLoRA "
            f"inference {a['vlora_inference_gflops']:.0f} (paper 619), training "
            f"{a['vlora_training_gflops']:.0f}; ratio {100 * a['ratio_inference']:.1f}% "
            f"(inference) / {100 * a['ratio_training']:.1f}% (training): the paper's 8% "
            f"{'is on the curve' if a['matches_paper'] else 'is NOT reproduced'}. The generator "
            f"itself costs {a['generator_gflops_per_image']:.1f} GFLOPs per image "
            f"({100 * a['generator_gflops_per_image'] / a['llava_gflops']:.2f}% of LLaVA's LLM).",
            md_table(
                [
                    "C",
                    "L",
                    "LLaVA GFLOPs",
                    "VLoRA train GFLOPs",
                    "VLoRA infer GFLOPs",
                    "ratio (train)",
                    "ratio (infer)",
                ],
                rows,
            ),
        ]
    )


def plot(result: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    grid = result["curves"]["visual_tokens"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (c, v) in enumerate(result["curves"]["by_text_tokens"].items()):
        color = f"C{i}"
        left.plot(grid, v["llava_gflops"], "-", color=color, label=f"LLaVA, C={c}")
        left.axhline(v["vlora_training_gflops"], color=color, ls="--", label=f"VLoRA, C={c}")
        right.plot(grid, [100 * x for x in v["ratio_training"]], "-", color=color, label=f"C={c}")
        right.plot(grid, [100 * x for x in v["ratio_inference"]], ":", color=color, lw=0.8)
    a = result["anchor"]
    right.plot([576], [100 * a["ratio_training"]], "ko")
    right.annotate(
        f"C=32, L=576: {100 * a['ratio_training']:.1f}% (train), "
        f"{100 * a['ratio_inference']:.1f}% (infer)",
        (576, 100 * a["ratio_training"]),
        textcoords="offset points",
        xytext=(15, 60),
        arrowprops={"arrowstyle": "->"},
        fontsize=8,
    )
    left.plot([576], [a["llava_gflops"]], "ko")
    left.set_xlabel("visual tokens L")
    left.set_ylabel("GFLOPs (LLM)")
    left.set_title("GFLOPs: LLaVA (solid) vs VLoRA (dashed)")
    left.legend(fontsize=7, ncol=2)
    right.set_xlabel("visual tokens L")
    right.set_ylabel("VLoRA / LLaVA, %")
    right.set_yscale("log")
    right.set_title("ratio (solid: training formula, dotted: merged inference)")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    apply_offline_defaults()
    args = parse_args(argv)
    grid = list(range(args.step, args.max_visual_tokens + 1, args.step))
    for anchor in (576, 256, 32):
        if anchor <= args.max_visual_tokens and anchor not in grid:
            grid.append(anchor)
    grid.sort()
    result = {
        "benchmark": NAME,
        "preset": PRESET,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "anchor": anchor_check(),
        "curves": curves(args.text_tokens, grid),
    }
    text = markdown(result)
    print(text.split("\n\n")[2])
    json_path, md_path = write_results(args.out, NAME, result, text)
    if not args.no_plot:
        plot(result, Path(args.out) / f"{NAME}.png")
    print(f"wrote {json_path} and {md_path}")
    return result


if __name__ == "__main__":
    main()
