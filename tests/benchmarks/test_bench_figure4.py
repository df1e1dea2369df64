"""Figure 4 from the cost model: the paper's anchor points are on it."""

from __future__ import annotations

import json

import pytest

from benchmarks import figure4


def test_anchor_reproduces_table1_and_the_8_percent() -> None:
    a = figure4.anchor_check()
    assert a["llava_gflops"] == pytest.approx(8027, rel=0.01)
    assert a["vlora_inference_gflops"] == pytest.approx(619, rel=0.01)
    assert round(100 * a["ratio_inference"]) == 8 and round(100 * a["ratio_training"]) == 8
    assert a["matches_paper"] is True
    assert 0 < a["generator_gflops_per_image"] < 0.01 * a["llava_gflops"]


def test_curves_grow_for_llava_and_stay_flat_for_vlora() -> None:
    grid = [32, 256, 576]
    c = figure4.curves([16, 32], grid)["by_text_tokens"]
    for values in c.values():
        assert values["llava_gflops"] == sorted(values["llava_gflops"])  # grows with L
        assert values["ratio_training"] == sorted(values["ratio_training"], reverse=True)
        assert values["vlora_training_gflops"] > values["vlora_inference_gflops"]
    assert c["16"]["vlora_training_gflops"] < c["32"]["vlora_training_gflops"]
    assert c["32"]["ratio_inference"][2] == pytest.approx(0.0773, abs=0.001)


def test_main_writes_json_markdown_and_png(tmp_path) -> None:
    result = figure4.main(["--out", str(tmp_path), "--step", "64"])
    assert 576 in result["curves"]["visual_tokens"]
    saved = json.loads((tmp_path / "figure4.json").read_text())
    assert saved["anchor"]["matches_paper"] is True
    assert "is on the curve" in (tmp_path / "figure4.md").read_text()
    assert (tmp_path / "figure4.png").stat().st_size > 10_000
