"""Served = offline: the eval stage run on a checkpoint, then the same questions through
`python -m pipelines serve`, scored by the eval stage's scorer: the same answers, the same
scores (the command `python -m pipelines.serve.served_eval` does this for the local model)."""

from __future__ import annotations

import pytest

from pipelines.config import load_pipeline_config
from pipelines.serve.process import ServerProcess
from pipelines.serve.served_eval import compare_with_eval_stage, score_served
from pipelines.stages import run_chain

pytestmark = pytest.mark.slow


def test_served_answers_score_what_the_eval_stage_scored(tiny_checkpoint, tmp_path) -> None:
    config = load_pipeline_config(
        "smoke",
        [
            f"workdir={tmp_path / 'runs'}",
            f"eval.checkpoint={tiny_checkpoint}",
            "eval.benchmarks=[{key: EasyVQA_TEST, images: 6}]",
            "eval.max_new_tokens={mcq: 6, yorn: 6, short_answer: 6}",
            "ray.num_cpus=4",
        ],
    )
    run_chain(config, ["eval"])  # the eval stage itself: Ray Data actors, batched greedy
    with ServerProcess(["--model", str(tiny_checkpoint), "--max-batch-size", "8"]) as server:
        served = score_served(config, server.base_url, "tiny-vlora", tmp_path / "served")
    report = compare_with_eval_stage(config, served)["EasyVQA_TEST"]
    assert report["rows"] > 10
    assert report["identical_answers"] == report["rows"], report
    assert report["served"] == report["eval_stage"]
