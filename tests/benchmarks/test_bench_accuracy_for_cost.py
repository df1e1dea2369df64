"""Accuracy-for-cost report on fabricated finished runs: every run found from its config (as the
pipeline finds it), per-arm spread over seeds, image-bootstrap errors, references, the goal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import accuracy_for_cost as afc
from pipelines.core.chain import stage_module, upstream_results
from pipelines.core.stage import run_stage

# per image: (shape question right?, colour question right?, yes/no right?); 4 test images
TEST_QUESTIONS = [
    ("what shape is this?", "circle", "shape"),
    ("what color is the shape?", "red", "color"),
    ("is there a blue shape?", "no", "yes/no"),
]
# (arm, seed) → which images each category gets right, and the YORN answers it gives
RIGHT = {
    ("vlora", 0): {"shape": 4, "color": 2, "yes/no": 3},
    ("vlora", 1): {"shape": 4, "color": 4, "yes/no": 3},
    ("input_space", 0): {"shape": 4, "color": 3, "yes/no": 4},
    ("input_space", 1): {"shape": 3, "color": 3, "yes/no": 4},
}
IMAGES = 4


def _grid(tmp_path: Path) -> afc.Grid:
    return afc.Grid(
        config="smoke",
        workdir=str(tmp_path / "runs"),
        seeds=[0, 1],
        arms={
            "vlora": afc.Arm(design="vlora"),
            "input_space": afc.Arm(design="input_space"),
        },
    )


def _tsv(path: Path, header: list[str], rows: list[list[str]]) -> str:
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    return str(path)


def _eval_outputs(output_dir: str, arm: str, seed: int) -> dict:
    out = Path(output_dir)
    (out / "scores").mkdir(parents=True)
    (out / "predictions").mkdir()
    right = RIGHT[(arm, seed)]
    test_rows, test_preds, hits = [], [], {"shape": 0, "color": 0, "yes/no": 0}
    for image in range(IMAGES):
        for question, answer, category in TEST_QUESTIONS:
            index = str(len(test_rows))
            ok = image < right[category]
            hits[category] += ok
            test_rows.append([index, question, answer, category, f"test/{image}.png"])
            test_preds.append({"index": int(index), "prediction": answer if ok else "triangle"})
    yorn_rows, yorn_preds = [], []
    for image in range(IMAGES):
        for category in ("color", "shape"):
            for answer in ("Yes", "No"):
                index = str(len(yorn_rows))
                yorn_rows.append(
                    [index, "is there …?", answer, category, f"{category}/{image}.png"]
                )
                said = "No" if arm == "vlora" and seed == 0 else answer  # one constant answer
                yorn_preds.append({"index": int(index), "prediction": said})
    header = ["index", "question", "answer", "category", "image_path"]
    test_overall = 100 * sum(hits.values()) / len(test_rows)
    yorn_total = 100.0 if arm == "vlora" and seed == 0 else 400.0
    for key, rows, preds, scores in (
        ("EasyVQA_TEST", test_rows, test_preds, {"category": {c: 25 * n for c, n in hits.items()}}),
        ("EasyVQA_YORN", yorn_rows, yorn_preds, {"subtasks": {}}),
    ):
        data = _tsv(out / f"{key}.tsv", header, rows)
        (out / "scores" / f"{key}.json").write_text(json.dumps({"data": data, "scores": scores}))
        (out / "predictions" / f"{key}.jsonl").write_text(
            "".join(json.dumps(p) + "\n" for p in preds)
        )
    return {
        "metrics": {"EasyVQA_TEST/Overall": test_overall, "EasyVQA_YORN/total": yorn_total},
        "summary": {},
    }


def _fabricate(grid: afc.Grid, arm: str, seed: int, stages=afc.STAGES) -> None:
    config = afc.run_config(grid, grid.arms[arm], seed)
    for name in stages:
        module = stage_module(name)

        def produce(out: str, name: str = name) -> dict:
            if name == "eval":
                return _eval_outputs(out, arm, seed)
            summary = {"steps": 8, "global_batch_size": 8, "loss_last": 0.5 + seed}
            if name in ("pretrain", "sft"):
                return {"summary": summary, "metrics": {"process_cpu_seconds": 100.0 + 50 * seed}}
            return {"summary": {}}

        run_stage(
            name, config.workdir, module.key_config(config), produce, upstream_results(config, name)
        )


def _fabricate_all(grid: afc.Grid) -> None:
    for arm, seed in RIGHT:
        _fabricate(grid, arm, seed)


def test_report_spread_bootstrap_references_and_goal(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    _fabricate_all(grid)
    result = afc.report(grid, tmp_path / "out")
    runs = {(r["arm"], r["seed"]): r for r in result["runs"]}
    assert set(runs) == set(RIGHT)
    assert all(r["design"] == r["arm"] for r in runs.values())  # arms named after designs here
    assert runs[("vlora", 0)]["easyvqa_test"] == pytest.approx(100 * 9 / 12)
    vlora = result["arms"]["vlora"]["easyvqa_test"]
    assert (vlora["min"], vlora["max"], vlora["n"]) == pytest.approx((75.0, 91.67, 2))
    assert vlora["mean"] == pytest.approx((75.0 + 11 / 12 * 100) / 2, abs=0.01)
    assert result["arms"]["vlora"]["easyvqa_yorn"]["min"] == 100.0
    # the bootstrap over 4 images: positive, and the same draws for every run
    error = result["sampling_error"]
    assert error["images"] == {"EasyVQA_TEST": 4, "EasyVQA_YORN": 4}
    assert error["easyvqa_test_run_se"] > 0
    assert error["differences"]["vlora - input_space"]["easyvqa_test_se"] > 0
    refs = result["no_image_references"]
    assert refs["category_majority"]["Overall"] == 100.0  # one answer per category here
    assert 0 <= refs["phrasing_prior"]["Overall"] <= 100  # from easy-vqa's real train split
    goal = result["goal"]["vlora vs input_space"]
    assert goal["criterion"].startswith("within 2 points")
    assert goal["easyvqa_test_gap_points"] == pytest.approx(83.33 - 87.5, abs=0.01)
    assert (goal["cost"], goal["train_time_ratio"]) == ("train_cpu_seconds", 1.0)
    assert goal["met"] is False  # the same training CPU time, not half of it
    assert runs[("vlora", 1)]["train_cpu_seconds"] == 300.0  # pretrain + sft workers
    md = (tmp_path / "out" / "accuracy_for_cost.md").read_text()
    assert "| vlora | vlora | 2 | 83.3 [75.0–91.7] |" in md
    assert "python -m flows smoke --stages download features pretrain sft eval" in md
    assert (tmp_path / "out" / "accuracy_for_cost.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "out" / "accuracy_for_cost.json").read_text())
    assert {(r["arm"], r["seed"]) for r in saved["runs"]} == set(RIGHT)
    assert not any(k.startswith("_") for r in saved["runs"] for k in r)


def test_yorn_per_image_scores_reproduce_the_mme_total() -> None:
    rows = [
        {"index": str(i), "answer": a, "category": c, "image_path": f"{c}/{img}.png"}
        for i, (img, c, a) in enumerate(
            (img, c, a) for img in (1, 2) for c in ("color", "shape") for a in ("Yes", "No")
        )
    ]
    constant = {r["index"]: "No" for r in rows}
    per_image = afc.yorn_score_by_image(rows, constant)
    assert per_image == {"1": 100.0, "2": 100.0}  # acc 50 + acc+ 0, two subtasks
    right = {r["index"]: r["answer"] for r in rows}
    assert afc.yorn_score_by_image(rows, right) == {"1": 400.0, "2": 400.0}


def test_unfinished_run_names_arm_seed_stage_and_command(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    _fabricate_all(grid)
    grid.seeds = [0, 1, 2]
    _fabricate(grid, "input_space", 2, stages=("download", "features", "pretrain"))
    with pytest.raises(SystemExit, match=r"arm 'input_space' seed 2: no finished 'sft'") as err:
        afc.main(["report", "--grid", str(_write(grid, tmp_path)), "--out", str(tmp_path / "o")])
    assert "--set seed=2" in str(err.value) and "arm 'vlora' seed 2" in str(err.value)
    # no comparison is written for an unfinished grid, but the finished runs are saved
    assert not (tmp_path / "o" / "accuracy_for_cost.json").exists()
    saved = sorted(p.name for p in (tmp_path / "o" / afc.RUNS_DIR).iterdir())
    assert saved == sorted(f"{arm}-seed{seed}.json" for arm, seed in RIGHT)


def test_partial_report_lists_the_missing_runs_with_their_commands(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    _fabricate(grid, "vlora", 0)
    _fabricate(grid, "input_space", 0)
    result = afc.report(grid, tmp_path / "out", partial=True)
    assert result["complete"] is False
    assert [(m["arm"], m["seed"]) for m in result["missing"]] == [("vlora", 1), ("input_space", 1)]
    assert all("--set seed=1" in m["command"] for m in result["missing"])
    assert result["arms"]["vlora"]["easyvqa_test"]["n"] == 1
    md = (tmp_path / "out" / "accuracy_for_cost.md").read_text()
    assert "**Partial: 2 of 4 runs" in md and "- input_space seed 1: `python -m flows" in md


def test_saved_records_stand_in_for_lost_workdirs(tmp_path: Path) -> None:
    """A later sitting has lost the workdir: the saved records give the same report, and a
    record made by another command (the arm changed) is not taken for this run."""
    grid = _grid(tmp_path)
    _fabricate_all(grid)
    first = afc.report(grid, tmp_path / "out")
    assert {r["source"] for r in first["runs"]} == {"workdir"}
    import shutil

    shutil.rmtree(grid.workdir)
    again = afc.report(grid, tmp_path / "out")
    assert {r["source"] for r in again["runs"]} == {"saved record"}
    for key in ("arms", "sampling_error", "no_image_references", "goal"):
        assert again[key] == first[key], key
    grid.arms["vlora"].overrides = ["pretrain.lr=0.01"]  # a different run now
    with pytest.raises(afc.RunNotFinishedError, match=r"arm 'vlora' seed 0"):
        afc.report(grid, tmp_path / "out")
    partial = afc.report(grid, tmp_path / "out", partial=True)
    assert set(partial["arms"]) == {"input_space"}


def test_run_skips_finished_runs_and_prints_the_rest(tmp_path: Path, capsys) -> None:
    grid = _grid(tmp_path)
    _fabricate(grid, "vlora", 0)
    afc.main(["run", "--grid", str(_write(grid, tmp_path)), "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[vlora seed 0] finished"
    assert lines[1].startswith("[vlora seed 1] python -m flows smoke --stages download")
    assert len(lines) == 4


def test_the_committed_grid_loads_with_three_seeds_and_an_equal_time_arm() -> None:
    grid = afc.load_grid(afc.GRID_FILE)
    assert len(grid.seeds) >= 3
    assert {a.design for a in grid.arms.values()} == {"vlora", "input_space"}
    assert any(a.equal_time_with in grid.arms for a in grid.arms.values())
    for arm in grid.arms.values():
        afc.run_config(grid, arm, grid.seeds[0])  # every run config validates


def _write(grid: afc.Grid, tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid.model_dump(), sort_keys=False))
    return path
