"""The eval stage end to end on Ray Data (CPU actors, tiny model): determinism, scoring parity with
``vlora score``, resumability per benchmark. One Ray session for the module."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines.config import load_pipeline_config
from pipelines.core.ray_cluster import RayConfig, ensure_ray
from pipelines.core.stage import MANIFEST
from pipelines.eval import stage as eval_stage
from vlora.model import VLoRAModel

pytestmark = pytest.mark.slow

FORMATS = Path(__file__).resolve().parents[2] / "vlora" / "eval" / "data" / "benchmark-formats"
BENCHMARKS = [
    {"key": "MME", "data": str(FORMATS / "MME_synthetic.tsv")},
    {"key": "MMBench_DEV_EN", "data": str(FORMATS / "MMBench_DEV_EN_synthetic.tsv")},
    {"key": "EasyVQA_TEST", "images": 3},
    {"key": "EasyVQA_YORN", "images": 3},
]
KEYS = [entry["key"] for entry in BENCHMARKS]
HEADLINE = {
    "MME": "perception",
    "MMBench_DEV_EN": "Overall",
    "EasyVQA_TEST": "Overall",
    "EasyVQA_YORN": "perception",
}


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ensure_ray(RayConfig(num_cpus=4))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    model = VLoRAModel.from_preset("tiny-llama")
    with torch.no_grad():  # non-zero W_s: the answers depend on the image
        for weight in model.generator.w_s.values():
            weight.normal_(0.0, 1.0)
    return str(model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny"))


def config_for(workdir: Path, checkpoint: str):
    return load_pipeline_config(
        {
            "name": "eval-test",
            "preset": "tiny-llama",
            "workdir": str(workdir),
            "eval": {
                "checkpoint": checkpoint,
                "benchmarks": BENCHMARKS,
                "max_new_tokens": {"mcq": 6, "yorn": 6, "short_answer": 6},
                "batch_size": 4,
                "cpus_per_actor": 1,
            },
        }
    )


@pytest.fixture(scope="module")
def first_run(ray_session, checkpoint, tmp_path_factory):
    return eval_stage.run(config_for(tmp_path_factory.mktemp("run1"), checkpoint))


def scores_only(metrics: dict[str, float]) -> dict[str, float]:
    return {name: value for name, value in metrics.items() if "per_s" not in name}


def predictions(result, key: str) -> str:
    return Path(result.output_dir, "predictions", f"{key}.jsonl").read_text()


def test_end_to_end_twice_gives_identical_predictions(first_run, checkpoint, tmp_path) -> None:
    second = eval_stage.run(config_for(tmp_path / "run2", checkpoint))
    assert not second.cached and second.summary["generated"] == KEYS
    for key in KEYS:
        text = predictions(first_run, key)
        assert text == predictions(second, key)
        lines = [json.loads(line) for line in text.splitlines()]
        assert all(set(line) == {"index", "prediction"} for line in lines)
    assert scores_only(first_run.metrics) == scores_only(second.metrics)
    # the model is image dependent: two images asked the same question get different answers
    yorn = [json.loads(line) for line in predictions(first_run, "EasyVQA_YORN").splitlines()]
    assert len({line["prediction"] for line in yorn}) > 1


def test_outputs_counts_and_report(first_run) -> None:
    out = Path(first_run.output_dir)
    summary = first_run.summary["benchmarks"]
    assert {k: summary[k]["rows_evaluated"] for k in KEYS} == {
        "MME": 4,
        "MMBench_DEV_EN": 7,
        "EasyVQA_TEST": 27,
        "EasyVQA_YORN": 12,
    }
    assert all(summary[k]["images_dropped_by_policy"] == 0 for k in KEYS)
    scores = json.loads((out / "scores.json").read_text())
    assert sorted(scores) == sorted(KEYS)
    for key, metric in HEADLINE.items():
        assert first_run.metrics[f"{key}/{metric}"] == scores[key]["scores"][metric]
        assert summary[key]["unresolved"] == scores[key]["scores"]["unresolved"]
    report = (out / "report.md").read_text()
    assert "| MME | perception" in report and "| 1510.7 | 1311.3 |" in report
    assert first_run.artifacts["model"] == first_run.summary["checkpoint"]
    assert (out / MANIFEST).is_file()


def test_vlora_score_cli_gives_the_stage_numbers(first_run) -> None:
    scores = json.loads(Path(first_run.output_dir, "scores.json").read_text())
    for key in KEYS:
        record = scores[key]
        command = [
            sys.executable,
            "-m",
            "vlora.cli",
            "score",
            "--benchmark",
            key,
            "--data",
            record["data"],
            "--predictions",
            record["predictions"],
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
        assert json.loads(done.stdout) == record["scores"], key
    assert scores["EasyVQA_TEST"]["data"].endswith("data/EasyVQA_TEST.tsv")


def test_rerun_regenerates_only_the_removed_benchmark(first_run, checkpoint) -> None:
    out = Path(first_run.output_dir)
    before = {key: (out / "predictions" / f"{key}.jsonl").stat().st_mtime_ns for key in KEYS}
    old_mme = predictions(first_run, "MME")
    (out / MANIFEST).unlink()  # as if the stage had been killed before finishing
    (out / "predictions" / "MME.jsonl").unlink()
    (out / "scores" / "MME.json").unlink()
    (out / "scores" / "MMBench_DEV_EN.json").unlink()  # killed between predictions and scores
    config = config_for(Path(first_run.output_dir).parents[1], checkpoint)
    rerun = eval_stage.run(config)
    assert rerun.output_dir == first_run.output_dir
    assert rerun.summary["generated"] == ["MME"]
    assert rerun.summary["rescored"] == ["MMBench_DEV_EN"]
    assert rerun.summary["reused"] == ["EasyVQA_TEST", "EasyVQA_YORN"]
    after = {key: (out / "predictions" / f"{key}.jsonl").stat().st_mtime_ns for key in KEYS}
    assert after["MME"] != before["MME"]
    assert all(after[key] == before[key] for key in KEYS if key != "MME")
    assert predictions(rerun, "MME") == old_mme
    assert rerun.metrics["MME/perception"] == first_run.metrics["MME/perception"]
    assert eval_stage.run(config).cached  # finished: a no-op
