"""The load benchmark's arithmetic (levels, percentiles, where the time goes, the targets) and a
tiny run of the whole script against the real server."""

from __future__ import annotations

import json

import pytest

from benchmarks import serve_load as sl


def test_percentiles_and_level_summary() -> None:
    assert sl.percentiles([3.0, 1.0, 2.0, 4.0])["p50"] in {2.0, 3.0}
    assert sl.percentiles([5.0] * 10) == {"mean": 5.0, "p50": 5.0, "p90": 5.0, "p99": 5.0}
    records = [
        {"ok": True, "ttft_s": 0.1, "e2e_s": 1.0, "output_tokens": 10, "prompt_tokens": 40},
        {"ok": True, "ttft_s": 0.3, "e2e_s": 2.1, "output_tokens": 10, "prompt_tokens": 40},
        {"ok": False, "ttft_s": None, "e2e_s": 0.5, "output_tokens": 0, "error": "HTTP 503"},
    ]
    level = sl.summarize_level(records, wall=2.0)
    assert (level["requests"], level["failures"], level["errors"]) == (3, 1, ["HTTP 503"])
    assert level["request_throughput"] == 1.0 and level["output_tokens_per_s"] == 10.0
    assert level["tpot_s"]["mean"] == pytest.approx((0.9 / 9 + 1.8 / 9) / 2)


def test_where_time_went_differences_the_server_counters() -> None:
    before = {
        "prefill_seconds": 1.0,
        "decode_seconds": 2.0,
        "prefill_steps": 3,
        "decode_steps": 10,
        "merged_decode_steps": 0,
        "steps_by_batch": {1: 10},
        "ms_by_batch": {1: 5.0},
        "cache_hits": 2,
        "cache_misses": 2,
        "torch_threads": 2,
    }
    after = {
        **before,
        "prefill_seconds": 1.5,
        "decode_seconds": 3.0,
        "prefill_steps": 5,
        "decode_steps": 30,
        "steps_by_batch": {1: 12, 4: 18},
        "cache_hits": 8,
        "cache_misses": 4,
    }
    went = sl.where_time_went(before, after, wall=2.0)
    assert went["decode_steps_by_batch"] == {1: 2, 4: 18}
    assert went["mean_decode_batch"] == pytest.approx((2 + 72) / 20)
    assert went["engine_busy_share"] == pytest.approx(0.75)
    assert went["cache_hit_rate"] == pytest.approx(6 / 8)


def _case(name, L, vlora_tps, base_tps, vlora_ttft=0.1, base_ttft=0.2):
    def run(design, tps, ttft):
        return {
            "design": design,
            "levels": [
                {"concurrency": c, "output_tokens_per_s": t, "ttft_s": {"p50": ttft}}
                for c, t in zip((1, 8), tps, strict=True)
            ],
        }

    return {
        "name": name,
        "visual_tokens": L,
        "runs": [run("vlora", vlora_tps, vlora_ttft), run("input_space", base_tps, base_ttft)],
    }


def test_checks_state_the_targets() -> None:
    met = sl.checks([_case("local", 64, (10, 40), (9, 30))])
    assert all(c["met"] for c in met) and len(met) == 5
    missed = sl.checks([_case("7b", 576, (10, 25), (9, 22))])
    by = {c["check"]: c for c in missed}
    assert not by["VLoRA tok/s c=8 / c=1 >= 3"]["met"]
    assert not by["c=8 tok/s VLoRA / baseline >= 1.3"]["met"]  # 25 / 22 < 1.3
    assert not any("TTFT" in c for c in by)  # TTFT is a target on the local model only


@pytest.mark.slow
def test_tiny_run_against_the_server(tmp_path) -> None:
    from tests.vlora.serving.conftest import build

    for design in ("vlora", "input_space"):
        build(design).save_pretrained(tmp_path / design)
    result = sl.main(
        [
            "--vlora-checkpoint", str(tmp_path / "vlora"),
            "--baseline-checkpoint", str(tmp_path / "input_space"),
            "--case-name", "tiny",
            "--concurrency", "1,2",
            "--requests", "4",
            "--max-tokens", "4",
            "--warmup", "1",
            "--images", "2",
            "--threads", "1",
            "--backend", "inprocess",
            "--out", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    saved = json.loads((tmp_path / "out" / "serve_load.json").read_text())
    assert saved["command"]  # the command line that produced it
    assert "logical_cpus" in saved["machine"]
    (case,) = saved["cases"]
    assert [r["design"] for r in case["runs"]] == ["vlora", "input_space"]
    for run in case["runs"]:
        for level in run["levels"]:
            assert level["failures"] == 0 and level["requests"] == 4
            assert level["output_tokens_per_s"] > 0
    vlora, baseline = (r["levels"][0]["prompt_tokens"] for r in case["runs"])
    assert baseline - vlora == case["visual_tokens"]  # L visual positions, VLoRA none
    assert (tmp_path / "out" / "serve_load.md").read_text().count("| vlora |") == 2
    assert (tmp_path / "out" / "serve_load.png").is_file()
    assert result["checks"]
