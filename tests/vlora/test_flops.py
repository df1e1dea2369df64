"""The cost model reproduces the paper's Table 1 (GFLOPs at C = 32) within 1%."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vlora.flops import cost_for_preset, input_space_flops, vlora_flops


@pytest.mark.parametrize(
    ("visual_tokens", "paper_gflops"), [(576, 8027), (256, 3754), (32, 827), (None, 619)]
)
def test_table1_values_within_one_percent(visual_tokens, paper_gflops) -> None:
    report = cost_for_preset("vicuna7b-clip336", 32, visual_tokens)
    assert report.gflops == pytest.approx(paper_gflops, rel=0.01)


def test_generator_cost_is_reported_apart_and_nonzero_for_vlora() -> None:
    report = cost_for_preset("vicuna7b-clip336", 32)
    assert report.design == "vlora" and report.inserted_blocks == 8
    assert 10 < report.generator_gflops < 200
    assert cost_for_preset("vicuna7b-clip336", 32, 576).generator_gflops == 0


def test_formulas_by_hand() -> None:
    assert (
        input_space_flops(d=2, h=3, text_tokens=1, visual_tokens=1)
        == 24 * 2 * 2 * 9 + 4 * 4 * 2 * 3
    )
    inference = 24 * 5 * 2 * 9 + 4 * 25 * 2 * 3 + 24 * 1 * 4 * 9 + 12 * 1 * 9
    assert vlora_flops(d=2, h=3, text_tokens=5, k=1, r=4) == inference
    training = inference - 12 * 9 + 12 * 5 * 1 * 9 + 14 * 5 * 1 * 3
    assert vlora_flops(d=2, h=3, text_tokens=5, k=1, r=4, mode="training") == training


def test_training_cost_exceeds_inference_cost() -> None:
    infer = cost_for_preset("vicuna7b-clip336", 32).gflops
    train = cost_for_preset("vicuna7b-clip336", 32, mode="training").gflops
    assert train > infer


@pytest.mark.parametrize(("extra", "expected"), [([], 619), (["--visual-tokens", "576"], 8027)])
def test_cli_json(extra: list[str], expected: float) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlora.cli",
            "flops",
            "--preset",
            "vicuna7b-clip336",
            "--text-tokens",
            "32",
            "--json",
            *extra,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["gflops"] == pytest.approx(expected, rel=0.01)
