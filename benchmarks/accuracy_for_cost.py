"""Accuracy for cost on the local default: VLoRA vs the input-space baseline, over seeds.

    python -m benchmarks.accuracy_for_cost run      # trains and evaluates what is missing
    python -m benchmarks.accuracy_for_cost report   # results/accuracy_for_cost.{json,md,png}

The experiment is a grid (`benchmarks/accuracy_for_cost.yaml`): arms (a design plus overrides,
e.g. more pre-training epochs) × seeds (the run config's `seed`: generator or projector init
and the data order of both training stages), all in one workdir, so the download and features
stages are shared. `run` starts `python -m flows <config> --stages download … eval` for every
(arm, seed) in turn; finished stages are cached no-ops, so it resumes where it stopped. `report`
reads only finished results, found exactly as the pipeline finds them (`finished_result` on the
run's config), and writes every run (its arm, design and seed) and per arm the mean, min and max
over seeds of: EasyVQA_TEST accuracy (overall and per category), EasyVQA_YORN (MME acc + acc+,
max 400), the stages' wall seconds, the last pre-training loss. Beside them:

* the sampling error of the evaluated images: a bootstrap over test images (their questions
  resampled together) of each run's score, and of the difference between two arms' means;
* references that need no image: each category's most frequent answer, and the majority answer
  per question phrasing in easy-vqa's train split (what reading the question alone gives);
* the goal: VLoRA within 2 points of the baseline's mean at no more than half its training
  time, or above the baseline at equal time.

Every finished run is also saved as one small record (`results/accuracy_for_cost_runs/ARM-seedN.json`:
its scores, per-image hits for the bootstrap, seconds, stage keys, the commit it was reported at).
A run missing from the workdir is taken from its saved record when the record's command is the
one the grid gives now, so a grid too long for one sitting (each run is 20–35 minutes on 2
cores) is completed over several, on machines whose workdirs do not survive. `report --partial`
writes the runs that exist and lists the missing ones with their commands; without it a missing
run is an error.

The Markdown and the plot are drawn by benchmarks/accuracy_for_cost_report.py.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import shlex
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from benchmarks import accuracy_for_cost_report
from benchmarks.accuracy_for_cost_report import TEST, YORN, cost_key
from benchmarks.results_io import DEFAULT_OUT, write_results
from vlora.utils.env import apply_offline_defaults

NAME = "accuracy_for_cost"
RUNS_DIR = f"{NAME}_runs"  # one saved record per finished run, beside the results
GRID_FILE = Path(__file__).with_name(f"{NAME}.yaml")
STAGES = ("download", "features", "pretrain", "sft", "eval")
BOOTSTRAP_SAMPLES = 2000
GOAL_POINTS = 2.0


class Arm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    design: str = Field(description="vlora or input_space")
    overrides: list[str] = Field(default_factory=list, description="`--set` overrides of the arm")
    equal_time_with: str | None = Field(
        default=None, description="The arm whose training seconds this arm is meant to match."
    )


class Grid(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: str = Field(description="Named pipeline config or YAML of every run.")
    workdir: str = Field(description="One workdir for every run (data stages shared).")
    seeds: list[int] = Field(min_length=1)
    overrides: list[str] = Field(default_factory=list, description="Overrides of every run.")
    arms: dict[str, Arm] = Field(min_length=1)


class RunNotFinishedError(FileNotFoundError):
    """A run whose stages are not all finished (names the stage and the command)."""


def load_grid(path: str | Path) -> Grid:
    return Grid.model_validate(yaml.safe_load(Path(path).read_text()))


def run_overrides(grid: Grid, arm: Arm, seed: int) -> list[str]:
    return [
        *grid.overrides,
        *arm.overrides,
        f"design={arm.design}",
        f"seed={seed}",
        f"workdir={grid.workdir}",
    ]


def flows_argv(grid: Grid, arm: Arm, seed: int) -> list[str]:
    sets = [arg for item in run_overrides(grid, arm, seed) for arg in ("--set", item)]
    return ["-m", "flows", grid.config, "--stages", *STAGES, *sets]


def flows_command(grid: Grid, arm: Arm, seed: int) -> str:
    return " ".join(["python", *(shlex.quote(a) for a in flows_argv(grid, arm, seed))])


def run_config(grid: Grid, arm: Arm, seed: int) -> Any:
    from pipelines.config import load_pipeline_config

    return load_pipeline_config(grid.config, run_overrides(grid, arm, seed))


def finished_stages(grid: Grid, arm_name: str, seed: int) -> tuple[Any, dict[str, Any]]:
    from pipelines.core.chain import finished_result

    arm = grid.arms[arm_name]
    config = run_config(grid, arm, seed)
    results = {}
    for stage in STAGES:
        try:
            results[stage] = finished_result(config, stage)
        except FileNotFoundError as err:
            raise RunNotFinishedError(
                f"arm '{arm_name}' seed {seed}: no finished '{stage}' stage in "
                f"'{config.workdir}' ({err}); produce it with `{flows_command(grid, arm, seed)}`"
            ) from None
    return config, results


# ----- per-image scores from the eval stage's TSV and predictions ------------------------------
def _read_tsv(path: str) -> list[dict[str, str]]:
    from pipelines.core import fs

    csv.field_size_limit(1 << 30)  # base64 image cells
    filesystem, local = fs.filesystem(path)
    with filesystem.open(local, "r", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _benchmark_files(ev: Any, key: str) -> tuple[list[dict[str, str]], dict[str, str]]:
    from pipelines.core import fs
    from pipelines.eval.outputs import predictions_url, read_predictions, scores_url

    record = fs.read_json(scores_url(ev.output_dir, key))
    return _read_tsv(record["data"]), read_predictions(predictions_url(ev.output_dir, key))


def image_key(row: dict[str, str]) -> str:
    """The test image of a row (YORN's `color/17.png` and `shape/17.png` are image 17)."""
    return Path(row["image_path"]).stem


def test_hits_by_image(rows: list[dict[str, str]], predictions: dict[str, str]) -> dict[str, Any]:
    """{image: [right, asked]} for EasyVQA_TEST, with the scorer's own normalisation."""
    from vlora.eval.metrics_vqa import normalise_short_answer

    per_image: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        right = normalise_short_answer(predictions.get(row["index"], "")) == (
            normalise_short_answer(row["answer"])
        )
        per_image[image_key(row)][0] += int(right)
        per_image[image_key(row)][1] += 1
    return dict(per_image)


def yorn_score_by_image(
    rows: list[dict[str, str]], predictions: dict[str, str]
) -> dict[str, float]:
    """Each image's share of the MME score (acc + acc+ per subtask, summed over subtasks):
    with every image holding one pair per subtask, the benchmark score is their mean."""
    from vlora.eval.extraction import extract_yes_no

    hits: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        verdict = extract_yes_no(predictions.get(row["index"], ""))
        hits[image_key(row)][row["category"]].append(int(verdict == row["answer"].strip()))
    return {
        image: sum(100.0 * np.mean(h) + 100.0 * all(h) for h in by_category.values())
        for image, by_category in hits.items()
    }


def bootstrap_images(images: list[str], seed: int = 0) -> np.ndarray:
    """Resampled image positions [BOOTSTRAP_SAMPLES, n] (the same draws for every run)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, len(images), size=(BOOTSTRAP_SAMPLES, len(images)))


def test_score_samples(per_image: dict[str, Any], images: list[str], draws: np.ndarray):
    right = np.array([per_image[i][0] for i in images], dtype=float)
    asked = np.array([per_image[i][1] for i in images], dtype=float)
    return 100.0 * right[draws].sum(axis=1) / asked[draws].sum(axis=1)  # [samples]


def yorn_score_samples(per_image: dict[str, float], images: list[str], draws: np.ndarray):
    return np.array([per_image[i] for i in images])[draws].mean(axis=1)  # [samples]


# ----- references that need no image -----------------------------------------------------------
_VALUE_WORDS = re.compile(
    r"\b(circle|rectangle|triangle|black|blue|brown|gray|green|red|teal|yellow)\b"
)


def phrasing(question: str) -> str:
    return _VALUE_WORDS.sub("{}", question.lower().strip())


def no_image_references(rows: list[dict[str, str]]) -> dict[str, Any]:
    """Accuracy (%) without the image: per category the most frequent answer of these rows, and
    per phrasing the majority answer of easy-vqa's train questions (a text-only prior)."""
    from pipelines.download import easyvqa

    by_category: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        by_category[row["category"]][row["answer"].strip().lower()] += 1
    majority = {c: 100.0 * max(n.values()) / sum(n.values()) for c, n in by_category.items()}
    total = sum(sum(n.values()) for n in by_category.values())
    majority["Overall"] = 100.0 * sum(max(n.values()) for n in by_category.values()) / total
    train: dict[str, Counter] = defaultdict(Counter)
    for q in easyvqa.questions("train"):
        train[phrasing(q.text)][q.answer] += 1
    prior_hits: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        counts = train.get(phrasing(row["question"]))
        guess = counts.most_common(1)[0][0] if counts else ""
        prior_hits[row["category"]].append(int(guess == row["answer"].strip().lower()))
    prior = {c: 100.0 * float(np.mean(h)) for c, h in prior_hits.items()}
    prior["Overall"] = 100.0 * float(np.mean([h for hs in prior_hits.values() for h in hs]))
    return {"category_majority": _sorted(majority), "phrasing_prior": _sorted(prior)}


def _sorted(values: dict[str, float]) -> dict[str, float]:
    return {k: round(values[k], 2) for k in sorted(values)}


# ----- one run ---------------------------------------------------------------------------------
def run_record(grid: Grid, arm_name: str, seed: int) -> dict[str, Any]:
    """Everything the report needs of one finished run; per-image scores for the bootstrap."""
    config, results = finished_stages(grid, arm_name, seed)
    ev = results["eval"]
    test_rows, test_predictions = _benchmark_files(ev, TEST)
    yorn_rows, yorn_predictions = _benchmark_files(ev, YORN)
    test_scores = _scores(ev, TEST)
    seconds = {stage: round(float(r.seconds), 1) for stage, r in results.items()}
    return {
        "arm": arm_name,
        "design": grid.arms[arm_name].design,
        "seed": seed,
        "command": flows_command(grid, grid.arms[arm_name], seed),
        "easyvqa_test": float(ev.metrics[f"{TEST}/Overall"]),
        "easyvqa_test_by_category": {
            k: float(v) for k, v in sorted(test_scores.get("category", {}).items())
        },
        "easyvqa_yorn": float(ev.metrics[f"{YORN}/total"]),
        "easyvqa_yorn_by_subtask": {
            k: v["score"] for k, v in sorted(_scores(ev, YORN).get("subtasks", {}).items())
        },
        "questions": {TEST: len(test_rows), YORN: len(yorn_rows)},
        "seconds": seconds,
        "train_seconds": round(seconds["pretrain"] + seconds["sft"], 1),
        # CPU time of the training workers: the cost on a machine other work shares, where
        # wall seconds also count the waiting (NaN for runs made before it was recorded)
        "train_cpu_seconds": round(
            sum(
                float(results[p].metrics.get("process_cpu_seconds", math.nan))
                for p in ("pretrain", "sft")
            ),
            1,
        ),
        "pretrain_loss_last": results["pretrain"].summary.get("loss_last"),
        "steps": {p: results[p].summary.get("steps") for p in ("pretrain", "sft")},
        "global_batch": {
            p: results[p].summary.get("global_batch_size") for p in ("pretrain", "sft")
        },
        "result_dirs": {stage: r.output_dir for stage, r in results.items()},
        "stage_keys": {stage: r.key for stage, r in results.items()},
        "eval_finished_at": results["eval"].finished_at,
        "cost": prefill_cost(config),
        # kept out of the JSON (large); used for the bootstrap and the references
        "_test_by_image": test_hits_by_image(test_rows, test_predictions),
        "_yorn_by_image": yorn_score_by_image(yorn_rows, yorn_predictions),
        "_no_image_references": no_image_references(test_rows),
    }


def _scores(ev: Any, key: str) -> dict[str, Any]:
    from pipelines.core import fs
    from pipelines.eval.outputs import scores_url

    return fs.read_json(scores_url(ev.output_dir, key)).get("scores", {})


def prefill_cost(config: Any, text_tokens: int = 32) -> dict[str, Any]:
    """LLM prefill GFLOPs per sample at C text tokens (the paper's formulas, vlora.flops)."""
    from vlora.flops import input_space_flops, vlora_flops

    model = config.resolved_model
    arch = model.llm.architecture or {}
    d, h = int(arch["num_hidden_layers"]), int(arch["hidden_size"])
    visual = model.vision.num_patches
    if config.design == "vlora":
        k = len(model.generator.resolve_blocks(d))
        gflop = vlora_flops(d, h, text_tokens, k, model.generator.rank) / 1e9
    else:
        gflop = input_space_flops(d, h, text_tokens, visual) / 1e9
    return {"text_tokens": text_tokens, "visual_tokens": visual, "llm_prefill_gflop": gflop}


# ----- saved run records ------------------------------------------------------------------------
def record_path(out: str | Path, arm_name: str, seed: int) -> Path:
    return Path(out) / RUNS_DIR / f"{arm_name}-seed{seed}.json"


def _commit() -> str:
    """HEAD of this checkout, `+dirty` when tracked files differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}+dirty" if dirty else head or "unknown"


def save_record(run: dict[str, Any], out: str | Path) -> Path:
    """Write one finished run's record (atomic): everything the report reads of it."""
    record = {k: v for k, v in run.items() if not k.startswith("_")}
    record["test_by_image"] = run["_test_by_image"]
    record["yorn_by_image"] = run["_yorn_by_image"]
    record["no_image_references"] = run["_no_image_references"]
    record.setdefault("reported_at_commit", _commit())
    path = record_path(out, run["arm"], run["seed"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def load_record(grid: Grid, arm_name: str, seed: int, out: str | Path) -> dict[str, Any] | None:
    """The saved record of (arm, seed) if it was made by the command the grid gives now."""
    path = record_path(out, arm_name, seed)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if record.get("command") != flows_command(grid, grid.arms[arm_name], seed):
        return None  # the arm's overrides changed since: that run is not this one
    run = {k: v for k, v in record.items() if k not in ("test_by_image", "yorn_by_image")}
    run.pop("no_image_references", None)
    run["_test_by_image"] = record["test_by_image"]
    run["_yorn_by_image"] = record["yorn_by_image"]
    run["_no_image_references"] = record["no_image_references"]
    run["source"] = "saved record"
    return run


def collect_runs(
    grid: Grid, out: str | Path
) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Every (arm, seed) from the workdir (and saved), else from its saved record; and the
    missing ones, each naming the command that produces it."""
    runs_by_arm: dict[str, list[dict[str, Any]]] = {}
    missing = []
    for arm_name in grid.arms:
        for seed in grid.seeds:
            try:
                run = run_record(grid, arm_name, seed)
                run["source"] = "workdir"
                run["reported_at_commit"] = _commit()
                save_record(run, out)
            except RunNotFinishedError as err:
                run = load_record(grid, arm_name, seed, out)
                if run is None:
                    command = flows_command(grid, grid.arms[arm_name], seed)
                    missing.append(
                        {"arm": arm_name, "seed": seed, "reason": str(err), "command": command}
                    )
                    continue
            runs_by_arm.setdefault(arm_name, []).append(run)
    return runs_by_arm, missing


# ----- arms, sampling error, goal --------------------------------------------------------------
def spread(values: list[float]) -> dict[str, float]:
    array = np.array(values, dtype=float)
    return {
        "mean": round(float(array.mean()), 2),
        "min": round(float(array.min()), 2),
        "max": round(float(array.max()), 2),
        "std": round(float(array.std(ddof=1)), 2) if len(array) > 1 else float("nan"),
        "n": len(array),
    }


def arm_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    categories = sorted({c for r in runs for c in r["easyvqa_test_by_category"]})
    return {
        "design": runs[0]["design"],
        "seeds": [r["seed"] for r in runs],
        "easyvqa_test": spread([r["easyvqa_test"] for r in runs]),
        "easyvqa_test_by_category": {
            c: spread([r["easyvqa_test_by_category"].get(c, float("nan")) for r in runs])
            for c in categories
        },
        "easyvqa_yorn": spread([r["easyvqa_yorn"] for r in runs]),
        "train_seconds": spread([r["train_seconds"] for r in runs]),
        "train_cpu_seconds": spread([r["train_cpu_seconds"] for r in runs]),
        "eval_seconds": spread([r["seconds"]["eval"] for r in runs]),
        "pretrain_loss_last": spread([r["pretrain_loss_last"] or float("nan") for r in runs]),
        "steps": runs[0]["steps"],
        "global_batch": runs[0]["global_batch"],
        "llm_prefill_gflop": runs[0]["cost"]["llm_prefill_gflop"],
    }


def sampling_error(
    by_arm: dict[str, list[dict[str, Any]]], pairs: list[tuple[str, str]]
) -> dict[str, Any]:
    """Bootstrap over the evaluated images: the standard error of one run's score, and of the
    difference between two arms' means (each resample scores every run on the same images)."""
    runs = [r for arm_runs in by_arm.values() for r in arm_runs]
    images = sorted(runs[0]["_test_by_image"])
    if any(sorted(r["_test_by_image"]) != images for r in runs):
        raise ValueError("the runs were evaluated on different images: compare like with like")
    yorn_images = sorted(runs[0]["_yorn_by_image"])
    draws, yorn_draws = bootstrap_images(images), bootstrap_images(yorn_images, seed=1)
    test = {
        arm: np.mean([test_score_samples(r["_test_by_image"], images, draws) for r in rs], axis=0)
        for arm, rs in by_arm.items()
    }
    yorn = {
        arm: np.mean(
            [yorn_score_samples(r["_yorn_by_image"], yorn_images, yorn_draws) for r in rs], axis=0
        )
        for arm, rs in by_arm.items()
    }
    single = [float(np.std(test_score_samples(r["_test_by_image"], images, draws))) for r in runs]
    return {
        "images": {TEST: len(images), YORN: len(yorn_images)},
        "bootstrap_samples": BOOTSTRAP_SAMPLES,
        "easyvqa_test_run_se": round(float(np.mean(single)), 2),
        "differences": {
            f"{a} - {b}": {
                "easyvqa_test_se": round(float(np.std(test[a] - test[b])), 2),
                "easyvqa_yorn_se": round(float(np.std(yorn[a] - yorn[b])), 2),
            }
            for a, b in pairs
        },
    }


def goal(arms: dict[str, dict[str, Any]], grid: Grid) -> dict[str, Any]:
    """Within 2 points of the baseline's mean at ≤ half its training time, or higher at equal
    time: checked for every VLoRA arm against the baseline arm(s), on training CPU seconds."""
    out = {}
    cost = cost_key(arms)
    for name, arm in arms.items():
        if arm["design"] != "vlora":
            continue
        for base_name, base in arms.items():
            if base["design"] != "input_space":
                continue
            gap = arm["easyvqa_test"]["mean"] - base["easyvqa_test"]["mean"]
            base_seconds = base[cost]["mean"]
            time_ratio = arm[cost]["mean"] / base_seconds if base_seconds else math.nan
            equal_time = grid.arms[name].equal_time_with == base_name
            met = (gap > 0) if equal_time else (gap >= -GOAL_POINTS and time_ratio <= 0.5)
            out[f"{name} vs {base_name}"] = {
                "criterion": "higher at equal time"
                if equal_time
                else f"within {GOAL_POINTS:g} points at ≤ half the training time",
                "easyvqa_test_gap_points": round(gap, 2),
                "train_time_ratio": round(time_ratio, 3),
                "cost": cost,
                "met": bool(met),
            }
    return out


# ----- report ----------------------------------------------------------------------------------
def report(grid: Grid, out: str | Path, partial: bool = False) -> dict[str, Any]:
    runs_by_arm, missing = collect_runs(grid, out)
    reasons = "; ".join(m["reason"] for m in missing)
    if missing and not partial:
        raise RunNotFinishedError(reasons)
    if not runs_by_arm:
        raise RunNotFinishedError(f"no finished run: {reasons}")
    arms = {name: arm_summary(runs) for name, runs in runs_by_arm.items()}
    baselines = [n for n in arms if grid.arms[n].design == "input_space"]
    pairs = [(n, b) for n in arms if grid.arms[n].design == "vlora" for b in baselines]
    first = next(iter(runs_by_arm.values()))[0]
    result = {
        "benchmark": NAME,
        "grid": grid.model_dump(),
        "complete": not missing,
        "missing": missing,
        "arms": arms,
        "runs": [
            {k: v for k, v in r.items() if not k.startswith("_")}
            for runs in runs_by_arm.values()
            for r in runs
        ],
        "sampling_error": sampling_error(runs_by_arm, pairs),
        "no_image_references": first["_no_image_references"],
        "goal": goal(arms, grid),
    }
    text = accuracy_for_cost_report.markdown(result)
    json_path, md_path = write_results(out, NAME, result, text)
    png = accuracy_for_cost_report.plot(result, Path(out) / f"{NAME}.png")
    print(text)
    print(f"wrote {json_path}, {md_path} and {png}")
    return result


# ----- running the grid -------------------------------------------------------------------------
def run_grid(grid: Grid, arms: list[str] | None, seeds: list[int] | None, dry_run: bool) -> None:
    """Each (arm, seed) through the pipeline in turn; finished stages are cached no-ops."""
    for arm_name, arm in grid.arms.items():
        if arms and arm_name not in arms:
            continue
        for seed in grid.seeds:
            if seeds and seed not in seeds:
                continue
            try:
                finished_stages(grid, arm_name, seed)
                print(f"[{arm_name} seed {seed}] finished", flush=True)
                continue
            except RunNotFinishedError:
                pass
            print(f"[{arm_name} seed {seed}] {flows_command(grid, arm, seed)}", flush=True)
            if not dry_run:
                subprocess.run([sys.executable, *flows_argv(grid, arm, seed)], check=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.accuracy_for_cost",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("action", choices=["run", "report"])
    p.add_argument("--grid", default=str(GRID_FILE), help="the experiment's YAML")
    p.add_argument("--arms", nargs="*", help="run: only these arms")
    p.add_argument("--seeds", nargs="*", type=int, help="run: only these seeds")
    p.add_argument("--dry-run", action="store_true", help="run: print the commands only")
    p.add_argument(
        "--partial",
        action="store_true",
        help="report: write the finished runs and list the missing ones (default: an error)",
    )
    p.add_argument("--out", default=str(DEFAULT_OUT))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    apply_offline_defaults()
    args = parse_args(argv)
    grid = load_grid(args.grid)
    if args.action == "run":
        run_grid(grid, args.arms, args.seeds, args.dry_run)
        return None
    try:
        return report(grid, args.out, partial=args.partial)
    except RunNotFinishedError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
