"""Accuracy-for-cost script on fabricated finished runs: it reads each design's own results (found
from the config, as the pipeline does), and names what is missing when a run is not finished."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from benchmarks import accuracy_for_cost as afc
from pipelines.config import load_pipeline_config
from pipelines.core.chain import upstream_results
from pipelines.core.stage import run_stage
from vlora.baseline import InputSpaceModel
from vlora.model import VLoRAModel
from vlora.model_base import count_parameters

SCORES = {"vlora": (81.5, 310.0), "input_space": (74.0, 280.0)}


def _fabricate(workdir: Path, design: str, stages: tuple[str, ...] = afc.STAGES) -> None:
    """Finished manifests for `stages`, placed as the real stages would place them."""
    config = load_pipeline_config("smoke", [f"workdir={workdir}", f"design={design}"])
    test, yorn = SCORES[design]
    for name in stages:
        module = importlib.import_module(f"pipelines.{name}")
        produced: dict = {"summary": {"fabricated": True, "design": design}}
        if name in ("pretrain", "sft"):
            produced["summary"] |= {"steps": 8 if name == "pretrain" else 6, "global_batch_size": 8}
        if name == "eval":
            produced["metrics"] = {
                "EasyVQA_TEST/Overall": test,
                "EasyVQA_YORN/perception": yorn,
                "EasyVQA_YORN/total": yorn,
            }
            produced["summary"]["benchmarks"] = {"EasyVQA_TEST": {"rows_evaluated": 37}}
        run_stage(
            name,
            config.workdir,
            module.key_config(config),
            lambda out, produced=produced, name=name: _produce(out, name, produced, test),
            upstream_results(config, name),
        )


def _produce(output_dir: str, stage: str, produced: dict, test: float) -> dict:
    """The stage's result; eval also writes the scorer's scores.json with a category breakdown."""
    if stage == "eval":
        scores, data = Path(output_dir) / "scores.json", Path(output_dir) / "EasyVQA_TEST.tsv"
        rows = [("shape", "circle"), ("shape", "circle"), ("shape", "square"), ("color", "red")]
        data.write_text(
            "index\tanswer\tcategory\n"
            + "".join(f"{i}\t{answer}\t{category}\n" for i, (category, answer) in enumerate(rows))
        )
        category = {"shape": test, "color": test - 20}
        record = {
            "EasyVQA_TEST": {
                "data": str(data),
                "scores": {"Overall": test, "category": category},
            }
        }
        scores.write_text(json.dumps(record))
        produced = {**produced, "artifacts": {"scores": str(scores)}}
    return produced


def _args(tmp_path: Path, vlora: Path, baseline: Path) -> list[str]:
    return [
        "--config",
        "smoke",
        "--vlora-workdir",
        str(vlora),
        "--baseline-workdir",
        str(baseline),
        "--out",
        str(tmp_path / "out"),
    ]


def test_table_reads_each_designs_own_results(tmp_path: Path) -> None:
    vlora, baseline = tmp_path / "vlora", tmp_path / "baseline"
    _fabricate(vlora, "vlora")
    _fabricate(baseline, "input_space")
    _fabricate(baseline, "vlora")  # a decoy: the other design's results in the same workdir
    result = afc.main(_args(tmp_path, vlora, baseline))
    rows = result["designs"]
    for design, (test, yorn) in SCORES.items():
        row = rows[design]
        assert (row["easyvqa_test_overall"], row["easyvqa_yorn_total"]) == (test, yorn)
        assert row["easyvqa_test_by_category"] == {"color": test - 20, "shape": test}
        majority = row["easyvqa_test_majority_answer"]
        assert majority == pytest.approx({"color": 100.0, "shape": 200 / 3, "Overall": 75.0})
        assert row["pretrain"]["steps"] == 8 and row["sft"]["steps"] == 6
        for stage in afc.STAGES:
            manifest = json.loads((Path(row["result_dirs"][stage]) / "_MANIFEST.json").read_text())
            assert manifest["result"]["seconds"] == row["seconds"][stage]
            if stage in ("pretrain", "sft"):
                assert manifest["config"]["design"] == design
        assert row["train_seconds"] == row["seconds"]["pretrain"] + row["seconds"]["sft"]
    assert Path(rows["input_space"]["result_dirs"]["pretrain"]).parent.parent == baseline
    assert result["same_budget"]

    # trainable parameters and costs from the run's model config (tiny-llama, L=16)
    for design, cls in (("vlora", VLoRAModel), ("input_space", InputSpaceModel)):
        model = cls.from_preset("tiny-llama", meta=True)
        bridge = sum(count_parameters(m) for m in model.bridge_modules().values())
        assert rows[design]["trainable_params"] == {
            "pretrain": bridge,
            "sft": bridge + count_parameters(model.llm),
        }
        assert rows[design]["cost"]["visual_tokens"] == 16
    assert (
        rows["vlora"]["cost"]["llm_prefill_gflop"]
        < rows["input_space"]["cost"]["llm_prefill_gflop"]
    )

    # the commands that produce the two runs
    assert rows["vlora"]["command"] == f"python -m flows smoke --set workdir={vlora}"
    assert rows["input_space"]["command"] == (
        f"python -m flows smoke --set design=input_space --set workdir={baseline}"
    )
    md = (tmp_path / "out" / "accuracy_for_cost.md").read_text()
    assert (
        "| design | EasyVQA_TEST Overall % |" in md
        and "| vlora | 81.5 | color 61.5 · shape 81.5 | 310 |" in md
    )
    assert rows["input_space"]["command"] in md and "Same budget" in md
    saved = json.loads((tmp_path / "out" / "accuracy_for_cost.json").read_text())
    assert saved["designs"]["input_space"]["easyvqa_test_overall"] == 74.0


def test_default_commands_are_the_documented_ones() -> None:
    args = afc.parse_args([])
    assert afc.flows_command(args, "vlora") == "python -m flows local"
    assert afc.flows_command(args, "input_space") == (
        "python -m flows local --set design=input_space"
    )


def test_unfinished_run_names_the_stage_workdir_and_command(tmp_path: Path) -> None:
    vlora, baseline = tmp_path / "vlora", tmp_path / "baseline"
    _fabricate(vlora, "vlora")
    _fabricate(baseline, "input_space", stages=("download", "features", "pretrain"))
    with pytest.raises(
        SystemExit, match=r"input_space run in .*baseline.* no finished 'sft'"
    ) as err:
        afc.main(_args(tmp_path, vlora, baseline))
    assert "python -m flows smoke --set design=input_space" in str(err.value)
    missing = tmp_path / "nowhere"
    with pytest.raises(SystemExit, match=r"vlora run has no workdir .*nowhere"):
        afc.main(_args(tmp_path, missing, baseline))
    assert not (tmp_path / "out").exists()  # nothing written for an unfinished comparison
