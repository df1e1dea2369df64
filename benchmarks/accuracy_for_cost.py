"""Accuracy for cost on the local default: VLoRA vs the input-space baseline, same budget.

    python -m flows local                                                          # VLoRA run
    python -m flows local --set design=input_space                                 # baseline
    python benchmarks/accuracy_for_cost.py                                         # this table

Reads the two finished pipeline runs (nothing is trained or evaluated here): the stage results
are found exactly as the pipeline finds them, from the config (`load_pipeline_config(config,
overrides)` with `workdir=` and `design=` set per run, then `pipelines.core.chain.
finished_result`), so a result of another config in the same workdir is never picked up. Per
design: EasyVQA_TEST accuracy (exact match, %), EasyVQA_YORN (MME-style acc + acc+, max 400),
the wall seconds of the pretrain, sft and eval stages (from their manifests), steps and global
batch (the budget: the two runs must match), trainable parameters per phase (pre-training: the
bridge; SFT: bridge + LLM; counted on a meta-device build of the run's model config), and the
LLM prefill cost per sample from the paper's formulas (vlora.flops) at the run's L visual tokens
and `--text-tokens` C, with the bridge (generator or projector) per image beside it.
A run that is not finished fails with the stage, the workdir and the command that produces it.
Writes benchmarks/results/accuracy_for_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import collections
import csv
import math
import shlex
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common
from vlora.utils.env import apply_offline_defaults

NAME = "accuracy_for_cost"
STAGES = ("download", "features", "pretrain", "sft", "eval")
DESIGNS = ("vlora", "input_space")
TEST_METRIC = "EasyVQA_TEST/Overall"
YORN_METRICS = ("EasyVQA_YORN/total", "EasyVQA_YORN/perception")  # perception = total here


class RunNotFinishedError(FileNotFoundError):
    """A pipeline run whose stages are not all finished (names the stage and the command)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="local", help="named pipeline config or YAML of both runs")
    p.add_argument("--vlora-workdir", default="runs/local")
    p.add_argument(
        "--baseline-workdir",
        default="runs/local",
        help="the baseline's workdir; the same as VLoRA's by default, so download and features "
        "are shared (their keys do not depend on the design)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="a.b=value override both runs were made with (as `python -m flows --set`)",
    )
    p.add_argument("--text-tokens", type=int, default=32, help="C of the prefill FLOPs per sample")
    p.add_argument("--out", default=str(common.DEFAULT_OUT))
    return p.parse_args(argv)


# ----- the runs --------------------------------------------------------------------------------
def run_overrides(args: argparse.Namespace, design: str) -> list[str]:
    workdir = args.vlora_workdir if design == "vlora" else args.baseline_workdir
    return [*args.overrides, f"design={design}", f"workdir={workdir}"]


def flows_command(args: argparse.Namespace, design: str) -> str:
    """The `python -m flows` command that produces this design's run (defaults left out)."""
    from pipelines.config import load_pipeline_config

    default = load_pipeline_config(args.config, list(args.overrides))
    workdir = args.vlora_workdir if design == "vlora" else args.baseline_workdir
    sets = list(args.overrides)
    if design != default.design:
        sets.append(f"design={design}")
    # compare resolved paths: the config makes a relative workdir absolute
    if load_pipeline_config(args.config, [*args.overrides, f"workdir={workdir}"]).workdir != (
        default.workdir
    ):
        sets.append(f"workdir={workdir}")
    return " ".join(
        ["python -m flows", shlex.quote(args.config), *(f"--set {shlex.quote(s)}" for s in sets)]
    )


def finished_stages(args: argparse.Namespace, design: str) -> tuple[Any, dict[str, Any]]:
    """(config, {stage: StageResult}) of one run; RunNotFinishedError names what is missing."""
    from pipelines.config import load_pipeline_config
    from pipelines.core import fs
    from pipelines.core.chain import finished_result

    config = load_pipeline_config(args.config, run_overrides(args, design))
    command = flows_command(args, design)
    if not fs.exists(config.workdir):
        raise RunNotFinishedError(
            f"the {design} run has no workdir '{config.workdir}' (config {args.config}): "
            f"produce it with `{command}`"
        )
    results = {}
    for stage in STAGES:
        try:
            results[stage] = finished_result(config, stage)
        except FileNotFoundError as err:
            raise RunNotFinishedError(
                f"the {design} run in '{config.workdir}' (config {args.config}) has no finished "
                f"'{stage}' stage ({err}); finish it with `{command}`"
            ) from None
    return config, results


# ----- costs -----------------------------------------------------------------------------------
def trainable_params(config: Any) -> dict[str, int]:
    """Trainable parameters per phase, counted on a meta-device build of the run's model."""
    from vlora.baseline import InputSpaceModel
    from vlora.model import VLoRAModel
    from vlora.model_base import count_parameters

    cls = VLoRAModel if config.design == "vlora" else InputSpaceModel
    model = cls.from_config(config.model_config_for_run(), meta=True)
    bridge = sum(count_parameters(m) for m in model.bridge_modules().values())
    return {"pretrain": bridge, "sft": bridge + count_parameters(model.llm)}


def prefill_cost(config: Any, text_tokens: int) -> dict[str, Any]:
    """LLM prefill GFLOPs per sample (vlora.flops) and the bridge's GFLOPs per image."""
    from vlora.flops import generator_flops, input_space_flops, vlora_flops

    model = config.model_config_for_run()
    arch = model.llm.architecture or {}
    d, h = int(arch["num_hidden_layers"]), int(arch["hidden_size"])
    length, dv = model.vision.num_patches, model.vision.feature_dim
    out: dict[str, Any] = {"text_tokens": text_tokens, "visual_tokens": length, "d": d, "h": h}
    if config.design == "vlora":
        k = len(model.generator.resolve_blocks(d))
        out["llm_prefill_gflop"] = vlora_flops(d, h, text_tokens, k, model.generator.rank) / 1e9
        out["bridge"] = "generator"
        out["bridge_gflop_per_image"] = (
            generator_flops(model.generator, model.vision, arch, k) / 1e9
        )
        out["formula"] = "24C·d·h² + 4C²·d·h + 24k·r·h² + 12k·h² (merged)"
    else:
        out["llm_prefill_gflop"] = input_space_flops(d, h, text_tokens, length) / 1e9
        out["bridge"] = "projector"
        hidden = dv * h + (h * h if model.projector.kind == "mlp2x_gelu" else 0)
        out["bridge_gflop_per_image"] = 2 * length * hidden / 1e9
        out["formula"] = "24(L+C)·d·h² + 4(L+C)²·d·h"
    return out


def _metric(metrics: dict[str, float], names: tuple[str, ...]) -> float:
    for name in names:
        if name in metrics:
            return float(metrics[name])
    return float("nan")


def _test_record(ev: Any) -> dict[str, Any]:
    """EasyVQA_TEST's record in the eval stage's scores.json ({} when absent)."""
    from pipelines.core import fs

    path = ev.artifacts.get("scores")
    if not path or not fs.exists(path):
        return {}
    return fs.read_json(path).get(TEST_METRIC.split("/")[0], {})


def test_categories(record: dict[str, Any]) -> dict[str, float]:
    """EasyVQA_TEST accuracy per question category: the scorer's own breakdown."""
    category = record.get("scores", {}).get("category", {})
    return {name: float(value) for name, value in sorted(category.items())}


def majority_baseline(record: dict[str, Any]) -> dict[str, float]:
    """Accuracy (%) of always giving each category's most frequent answer, from the evaluated
    TSV: the level a model reaches without looking at the image. Empty without the TSV."""
    from pipelines.core import fs

    data = record.get("data")
    if not data or not fs.exists(data):
        return {}
    csv.field_size_limit(1 << 30)  # base64 image cells
    answers: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    filesystem, path = fs.filesystem(data)
    with filesystem.open(path, "r", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            answers[row["category"]][row["answer"].strip().lower()] += 1
    out = {c: 100.0 * max(n.values()) / sum(n.values()) for c, n in sorted(answers.items())}
    total = sum(sum(n.values()) for n in answers.values())
    out["Overall"] = 100.0 * sum(max(n.values()) for n in answers.values()) / total
    return out


def design_row(args: argparse.Namespace, design: str) -> dict[str, Any]:
    config, results = finished_stages(args, design)
    ev, pre, sft = results["eval"], results["pretrain"], results["sft"]
    test_record = _test_record(ev)
    seconds = {stage: float(r.seconds) for stage, r in results.items()}

    def budget(result: Any) -> dict[str, Any]:
        s = result.summary
        return {
            key: s.get(key)
            for key in ("steps", "global_batch_size", "workers", "device", "strategy", "precision")
        } | {"loss_last": s.get("loss_last")}

    params = {
        phase: int(results[phase].summary["trainable_params"])
        for phase in ("pretrain", "sft")
        if "trainable_params" in results[phase].summary
    }
    if len(params) < 2:
        params = {**trainable_params(config), **params}
    evaluated = {
        key: info.get("rows_evaluated")
        for key, info in ev.summary.get("benchmarks", {}).items()
        if isinstance(info, dict)
    }
    return {
        "design": design,
        "workdir": config.workdir,
        "command": flows_command(args, design),
        "easyvqa_test_overall": _metric(ev.metrics, (TEST_METRIC,)),
        "easyvqa_test_by_category": test_categories(test_record),
        "easyvqa_test_majority_answer": majority_baseline(test_record),
        "easyvqa_yorn_total": _metric(ev.metrics, YORN_METRICS),
        "rows_evaluated": evaluated,
        "seconds": seconds,
        "train_seconds": seconds["pretrain"] + seconds["sft"],
        "pretrain": budget(pre),
        "sft": budget(sft),
        "trainable_params": params,
        "cost": prefill_cost(config, args.text_tokens),
        "result_dirs": {stage: r.output_dir for stage, r in results.items()},
        "eval_metrics": dict(ev.metrics),
    }


def same_budget(rows: dict[str, dict[str, Any]]) -> bool:
    keys = ("steps", "global_batch_size")
    v, b = rows["vlora"], rows["input_space"]
    return all(v[phase][k] == b[phase][k] for phase in ("pretrain", "sft") for k in keys)


# ----- report -----------------------------------------------------------------------------------
HEADERS = [
    "design",
    "EasyVQA_TEST Overall %",
    "by category %",
    "EasyVQA_YORN total (/400)",
    "pretrain s",
    "sft s",
    "eval s",
    "steps pretrain / sft (× batch)",
    "trainable params pretrain / sft",
    "LLM prefill GFLOP/sample",
    "bridge GFLOP/image",
]


def _steps(row: dict[str, Any]) -> str:
    pre, sft = row["pretrain"], row["sft"]
    return f"{pre['steps']} (×{pre['global_batch_size']}) / {sft['steps']} (×{sft['global_batch_size']})"


def markdown(result: dict[str, Any]) -> str:
    rows = result["designs"]
    table = [
        [
            name,
            r["easyvqa_test_overall"],
            _categories(r["easyvqa_test_by_category"]),
            r["easyvqa_yorn_total"],
            r["seconds"]["pretrain"],
            r["seconds"]["sft"],
            r["seconds"]["eval"],
            _steps(r),
            f"{r['trainable_params']['pretrain']:,d} / {r['trainable_params']['sft']:,d}",
            r["cost"]["llm_prefill_gflop"],
            r["cost"]["bridge_gflop_per_image"],
        ]
        for name, r in rows.items()
    ]
    v, b = rows["vlora"], rows["input_space"]
    diff = v["easyvqa_test_overall"] - b["easyvqa_test_overall"]
    cost = v["cost"]
    commands = "\n".join(f"    {r['command']}" for r in rows.values())
    budget = (
        "Same budget: both runs have the same steps and global batch in pre-training and SFT."
        if result["same_budget"]
        else "**Budgets differ** (steps or global batch): the comparison is not like for like."
    )
    return "\n\n".join(
        [
            "# Accuracy for cost: VLoRA vs the input-space baseline (local default)",
            f"Config `{result['config']}`; the two runs come from:\n\n{commands}",
            common.md_table(HEADERS, table),
            budget + f" EasyVQA_TEST: VLoRA {'+' if diff >= 0 else ''}{_fmt(diff)} points vs the "
            f"baseline; training (pretrain + sft) {_fmt(v['train_seconds'])} s vs "
            f"{_fmt(b['train_seconds'])} s (ratio {_fmt(_ratio(v['train_seconds'], b['train_seconds']))}); "
            f"eval {_fmt(v['seconds']['eval'])} s vs {_fmt(b['seconds']['eval'])} s.",
            _majority_sentence(v["easyvqa_test_majority_answer"]),
            f"Prefill GFLOPs per sample are the paper's formulas (vlora.flops, LLM only) at "
            f"C={cost['text_tokens']} text tokens and L={cost['visual_tokens']} visual tokens "
            f"(d={cost['d']}, h={cost['h']}); VLoRA merged sees C tokens, the baseline L + C. The "
            "bridge (generator or projector) runs once per image. Seconds are the stages' wall "
            "times from their manifests (the attempt that finished each stage; a resumed stage "
            "counts its last attempt only), on the machine that ran them.",
        ]
    )


def _majority_sentence(majority: dict[str, float]) -> str:
    if not majority:
        return "No evaluated TSV found: no majority-answer reference."
    return (
        "Always giving each category's most frequent answer (no image) scores "
        f"{_fmt(majority['Overall'])}% on EasyVQA_TEST "
        f"({_categories({k: v for k, v in majority.items() if k != 'Overall'})})."
    )


def _categories(by_category: dict[str, float]) -> str:
    return " · ".join(f"{name} {_fmt(value)}" for name, value in by_category.items()) or "–"


def _fmt(value: float) -> str:
    return "–" if value != value else f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def main(argv: list[str] | None = None) -> dict[str, Any]:
    apply_offline_defaults()
    args = parse_args(argv)
    try:
        rows = {design: design_row(args, design) for design in DESIGNS}
    except RunNotFinishedError as err:
        raise SystemExit(f"error: {err}") from None
    result = {
        "benchmark": NAME,
        "config": args.config,
        "overrides": args.overrides,
        "designs": rows,
        "same_budget": same_budget(rows),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
    }
    text = markdown(result)
    print(text)
    json_path, md_path = common.write_results(args.out, NAME, result, text)
    print(f"wrote {json_path} and {md_path}")
    return result


if __name__ == "__main__":
    main()
