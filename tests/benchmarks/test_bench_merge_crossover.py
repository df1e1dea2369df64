"""When merging pays: the crossover formula, the recommendation, a tiny run of the script."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import merge_crossover as mc


def test_crossover_tokens_formula() -> None:
    # merge 10 ms, prefill 5 (merged) vs 6 (factorised), steps 20 vs 21 ms: (10 + 5 - 6) / 1
    assert mc.crossover_tokens(0.010, 0.005, 0.006, 0.020, 0.021) == pytest.approx(9.0)
    assert mc.crossover_tokens(0.001, 0.005, 0.007, 0.020, 0.021) == 0.0  # pays at once
    assert mc.crossover_tokens(0.010, 0.005, 0.006, 0.021, 0.020) == math.inf  # never pays


def test_recommend_takes_the_largest_finite_crossover() -> None:
    cases = [
        {"case": "a", "crossover_new_tokens": {"C32": 3.2, "C512": 0.0}},
        {"case": "b", "crossover_new_tokens": {"C32": 7.01, "C512": 1.0}},
        {"case": "c", "crossover_new_tokens": {"C32": math.inf, "C512": 2.0}},
    ]
    rec = mc.recommend(cases, 32)
    assert rec["recommended_merge_min_new_tokens"] == 8
    assert set(rec["per_case"]) == {"a", "b", "c"}


@pytest.mark.slow
def test_tiny_run_measures_every_part(tmp_path) -> None:
    result = mc.main(
        [
            "--cases",
            "tiny",
            "--prompt-tokens",
            "8,32",
            "--decode-steps",
            "2",
            "--new-tokens",
            "1,3",
            "--batches",
            "1,2",
            "--batch-new-tokens",
            "2",
            "--repeats",
            "1",
            "--e2e-repeats",
            "1",
            "--warmup",
            "0",
            "--peak-sizes",
            "64,128",
            "--max-other-load",
            "0",
            "--out",
            str(tmp_path),
        ]
    )
    case = result["cases"][0]
    assert case["components"]["merged_linears"] == 2 * 4  # k=2 blocks × q, k, v, o
    assert case["components"]["merge_counted_gflop"] > 0
    assert set(case["crossover_new_tokens"]) == {"C8", "C32"}
    assert set(case["generate_batch1"]) == {"1", "3"}
    assert set(case["batch"]["results"]) == {"1", "2"}
    saved = json.loads((tmp_path / "merge_crossover.json").read_text())
    assert saved["recommendation"]["library_value"] >= 1
    assert (tmp_path / "merge_crossover.png").exists()
    assert "Crossover n*" in (tmp_path / "merge_crossover.md").read_text()
