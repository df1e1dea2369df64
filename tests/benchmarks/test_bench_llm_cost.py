"""LLM cost script on a tiny model: every path is timed and counted, and the exact counts agree
with the paper's formulas for a multi-head Llama."""

from __future__ import annotations

import json

import pytest

from benchmarks import llm_cost


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("llm_cost")
    res = llm_cost.main(
        [
            "--cases",
            "tiny",
            "--text-tokens",
            "8,32",
            "--visual-tokens",
            "64,576",
            "--e2e-text-tokens",
            "32",
            "--decode-batches",
            "1,2",
            "--decode-steps",
            "2",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--peak-sizes",
            "64,128",
            "--max-other-load",
            "0",
            "--no-profile",
            "--out",
            str(out),
        ]
    )
    res["_out"] = out
    return res


@pytest.mark.slow
def test_every_path_is_timed_and_counted(result: dict) -> None:
    rows = result["cases"][0]["rows"]
    paths = {r["path"] for r in rows}
    assert {
        "generator_L64",
        "generator_L576",
        "merge",
        "projector_L576",
        "vlora_prefill_merged",
        "baseline_prefill",
        "vlora_prefill_factorised",
        "vlora_e2e",
        "baseline_e2e",
        "vlora_decode_merged",
        "vlora_decode_factorised",
        "baseline_decode",
    } <= paths
    for row in rows:
        assert row["median_ms"] > 0 and row["counted_gflop"] > 0
        assert row["percent_of_peak"] > 0
    decode = [r for r in rows if "decode" in r["path"]]
    assert {r["batch"] for r in decode} == {1, 2} and all(r["tokens_per_s"] > 0 for r in decode)


@pytest.mark.slow
def test_counted_flops_match_the_paper_formula(result: dict) -> None:
    for row in result["cases"][0]["rows"]:
        if row["path"] in ("vlora_prefill_merged", "baseline_prefill"):
            # tiny Llama: MHA, FFN 2.69·h ≈ the paper's 16h²; lm_head over one position only
            assert row["counted_gflop"] == pytest.approx(row["paper_gflop"], rel=0.05)
    summary = result["cases"][0]["summary"]
    ratio = summary["prefill_ratio"]["C32_L576"]
    assert ratio["counted_flops"] < 0.1 and ratio["paper_flops"] < 0.1
    assert summary["claim"]["holds"] == (summary["claim"]["ratio"] <= 0.15)
    e2e = summary["end_to_end_C32_L576"]
    # the generator is timed at L=576 too (a second one is built for that length)
    assert e2e["vlora_components_ms"]["generator"] > 0
    assert e2e["vlora_sum_of_components_ms"] > e2e["vlora_components_ms"]["prefill"]


@pytest.mark.slow
def test_results_files(result: dict) -> None:
    out = result["_out"]
    saved = json.loads((out / "llm_cost.json").read_text())
    assert saved["matmul_peak"]["best_gflops"] > 0
    assert saved["command"].startswith("python ")
    md = (out / "llm_cost.md").read_text()
    assert "Claim (C=32, L=576)" in md and "| path |" in md
    assert (out / "llm_cost.png").exists()
