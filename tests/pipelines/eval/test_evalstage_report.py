"""report.md beside the paper's Table 1, and the flat metrics."""

from __future__ import annotations

from pipelines.eval.report import PAPER_ROWS, flat_metrics, render_report


def record(scores: dict, left_out: int = 0, rate: float = 12.5) -> dict:
    return {
        "data": "/d.tsv",
        "scores": {"unresolved": 1, "n_questions": 10, "data_md5": "x", **scores},
        "counts": {
            "rows_evaluated": 10,
            "rows_left_out_by_limit": left_out,
            "rows_dropped_without_image": 0,
            "images_dropped_by_policy": 2,
        },
        "generation": {"prompts_per_s_actor": rate},
    }


RECORDS = {
    "MME": record({"perception": 1234.56, "cognition": 300.0, "total": 1534.56}),
    "MMBench_DEV_EN": record({"Overall": 61.25}, left_out=5),
    "EasyVQA_TEST": record({"Overall": 87.5, "category": {"color": 90.0}}),
}


def test_report_has_table1_rows_side_by_side() -> None:
    text = render_report(RECORDS, {"name": "run", "checkpoint": "`/c`"}, list(RECORDS))
    lines = text.splitlines()
    assert lines[0] == "# Evaluation report: run"
    mme = next(line for line in lines if line.startswith("| MME | perception"))
    assert "| 1234.6 | 1510.7 | 1311.3 |" in mme  # perception only, as in Table 1
    mmbench = next(line for line in lines if line.startswith("| MMBench (dev, en)"))
    assert "| 61.2 (subset) | 64.3 | 63.4 |" in mmbench
    mmmu = next(line for line in lines if line.startswith("| MMMU (val)"))
    assert "| not run | 35.7 | 36.0 |" in mmmu and "33.7" in mmmu
    assert sum(line.startswith("| ") for line in lines) >= len(PAPER_ROWS) + 3
    assert any(
        line.startswith("| EasyVQA test (local) | exact-match acc % | 87.5 |") for line in lines
    )
    assert any(line.startswith("| MME | cognition") and "| 300.0 |" in line for line in lines)
    counts = next(line for line in lines if line.startswith("| EasyVQA_TEST |"))
    assert counts == "| EasyVQA_TEST | 10 | 0 | 0 | 2 | 1 | 12.5 | `/d.tsv` |"


def test_flat_metrics() -> None:
    metrics = flat_metrics(RECORDS)
    assert metrics["MME/perception"] == 1234.56
    assert metrics["MMBench_DEV_EN/Overall"] == 61.25
    assert metrics["EasyVQA_TEST/unresolved"] == 1.0
    assert metrics["EasyVQA_TEST/prompts_per_s_actor"] == 12.5
    assert "EasyVQA_TEST/data_md5" not in metrics
    assert not any("category" in name for name in metrics)  # nested breakdowns stay in scores.json
