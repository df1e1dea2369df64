"""Training throughput script on tiny-llama: both designs take real pre-training steps on the same
batch, and the counts it reports agree with what the models and the batch say."""

from __future__ import annotations

import json

import pytest

from benchmarks import train_throughput as tt
from vlora.baseline import InputSpaceModel
from vlora.data.tokenize import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from vlora.model import VLoRAModel
from vlora.model_base import count_parameters
from vlora.tokenizer import load_tokenizer

CAPTION_TOKENS = 24
BATCH = 3


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("train_throughput")
    res = tt.main(
        [
            "--preset",
            "tiny-llama",
            "--batch-size",
            str(BATCH),
            "--caption-tokens",
            str(CAPTION_TOKENS),
            "--warmup",
            "1",
            "--iterations",
            "2",
            "--device",
            "cpu",
            "--peak-sizes",
            "64,128",
            "--max-other-load",
            "0",
            "--out",
            str(out),
        ]
    )
    res["_out"] = out
    return res


def test_caption_batch_has_exactly_the_caption_tokens_and_no_padding() -> None:
    tokenizer = load_tokenizer("byte")
    batch, info = tt.caption_batch(tokenizer, 5, 40, (16, 8))
    assert batch["input_ids"].shape == (5, 42) and info["padding_tokens"] == 0
    assert (batch["input_ids"][:, 1] == IMAGE_TOKEN_INDEX).all()  # [BOS, <image>, caption…]
    assert ((batch["labels"] != IGNORE_INDEX).sum(dim=1) == 40).all()
    assert batch["image_features"].shape == (5, 16, 8) and bool(batch["has_image"].all())
    assert len({tuple(row.tolist()) for row in batch["input_ids"]}) == 4  # captions rotate
    assert info == {
        "text_tokens_per_sample": 42,
        "caption_tokens_per_sample": 40,
        "prompt_tokens_per_sample": 2,
        "padding_tokens": 0,
    }


def test_both_designs_report_positive_rates(result: dict) -> None:
    assert set(result["designs"]) == {"vlora", "baseline"}
    for row in result["designs"].values():
        for key in (
            "samples_per_s",
            "text_tokens_per_s",
            "llm_positions_per_s",
            "step_ms",
            "forward_ms",
            "backward_ms",
            "optimizer_ms",
            "achieved_gflops_per_s",
            "percent_of_peak",
            "saved_activation_mb",
            "optimizer_state_mb",
        ):
            assert row[key] > 0, key
        assert row["timing"]["step"]["repeats"] == 2 and row["timing"]["step"]["warmup"] == 1
        assert row["step_ms"] >= row["forward_ms"]
        # forward + backward counted (the CPU attention backward included), above the forward
        assert row["counted_train_gflop"] > row["counted_forward_gflop"] > 0
        assert row["paper_train_gflop_3x"] == pytest.approx(3 * row["paper_forward_gflop"])
    ratio = result["ratio_vlora_over_baseline"]
    assert ratio["samples_per_s"] == pytest.approx(
        result["designs"]["vlora"]["samples_per_s"] / result["designs"]["baseline"]["samples_per_s"]
    )
    assert result["matmul_peak"]["best_gflops"] > 0 and result["device"] == "cpu"


def test_same_text_tokens_per_sample_for_both_designs(result: dict) -> None:
    batch = result["batch"]
    assert batch["text_tokens_per_sample"] == CAPTION_TOKENS + 2  # BOS + image placeholder
    assert batch["batch_size"] == BATCH and batch["padding_tokens"] == 0
    per_sample = {
        name: row["text_tokens_per_s"] / row["samples_per_s"]
        for name, row in result["designs"].items()
    }
    assert per_sample["vlora"] == pytest.approx(per_sample["baseline"])
    assert per_sample["vlora"] == pytest.approx(CAPTION_TOKENS + 2)
    positions = batch["llm_positions_per_sample"]
    assert positions["vlora"] == CAPTION_TOKENS + 1  # the placeholder is removed
    assert positions["baseline"] == CAPTION_TOKENS + 1 + batch["visual_tokens"]
    assert batch["visual_tokens"] == 16  # tiny-llama: 32 px / patch 8


def test_trainable_parameters_are_what_the_models_report(result: dict) -> None:
    designs = result["designs"]
    for cls, name, bridge in (
        (VLoRAModel, "vlora", "generator"),
        (InputSpaceModel, "baseline", "projector"),
    ):
        model = cls.from_preset("tiny-llama", meta=True)
        model.set_trainable(bridge=True, llm=False)
        expected = count_parameters(model, trainable=True)
        assert expected == count_parameters(model.bridge_modules()[bridge])
        assert designs[name]["trainable_params"] == expected
        assert designs[name]["trainable_params_by_module"] == {bridge: expected}
        assert designs[name]["frozen_params"] >= count_parameters(model.llm)


def test_results_files(result: dict) -> None:
    out = result["_out"]
    saved = json.loads((out / "train_throughput.json").read_text())
    assert saved["command"].startswith("python ") and saved["preset"] == "tiny-llama"
    assert saved["designs"]["vlora"]["design"] == "vlora"
    assert saved["designs"]["baseline"]["design"] == "input_space"
    md = (out / "train_throughput.md").read_text()
    assert "| design | samples/s |" in md and "VLoRA / baseline" in md


def test_time_rounds_reruns_contended_rounds_of_both_designs(scripted_guard) -> None:
    calls = {"vlora": 0, "baseline": 0}

    def step(name: str):
        def run() -> dict[str, float]:
            calls[name] += 1
            return dict.fromkeys(tt.PHASES, 0.001 * calls[name])

        return run

    guard = scripted_guard([2.0, 0.1])  # the one timed round: busy, then quiet
    timings = tt.time_rounds(
        {"vlora": step("vlora"), "baseline": step("baseline")}, warmup=1, iterations=1, guard=guard
    )
    assert calls == {"vlora": 3, "baseline": 3}  # warm-up, the discarded round, the kept one
    assert {t.repeats for phases in timings.values() for t in phases.values()} == {1}
    assert timings["vlora"][tt.PHASES[0]].median_s == 0.003  # the kept round's sample
