"""`python -m flows`: what runs before the flow (Prefect home, config errors) and the report."""

from __future__ import annotations

import os

from flows import local


def test_prefect_home_is_created_next_to_a_fresh_workdir(tmp_path, monkeypatch) -> None:
    # a fresh clone has no runs/ yet; Prefect's ephemeral API cannot create its SQLite folder
    monkeypatch.delenv("PREFECT_HOME", raising=False)
    local._prefect_defaults(str(tmp_path / "runs" / "local"))
    assert os.environ["PREFECT_HOME"] == str(tmp_path / "runs" / ".prefect")
    assert (tmp_path / "runs" / ".prefect").is_dir()


def test_bad_config_exits_2_naming_the_field(tmp_path, capsys) -> None:
    code = local.main(["smoke", "--set", f"workdir={tmp_path}", "--set", "sft.lr=-1"])
    assert code == 2
    assert "sft.lr" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_report_lists_stages_scores_and_registration(capsys) -> None:
    results = {
        "download": {"cached": True, "seconds": 0.0, "output_dir": "/w/download/a"},
        "sft": {
            "cached": False,
            "seconds": 457.0,
            "output_dir": "/w/sft/s",
            "summary": {"resumed_from_steps": [40]},
        },
        "eval": {
            "cached": False,
            "seconds": 61.2,
            "output_dir": "/w/eval/b",
            "metrics": {"EasyVQA_TEST/Overall": 87.5},
            "artifacts": {"report": "/w/eval/b/report.md"},
        },
        "register": {
            "cached": False,
            "seconds": 1.0,
            "output_dir": "/w/register/c",
            "summary": {"model_name": "vlora-local", "version": "3", "aliases": ["candidate"]},
        },
    }
    local.print_report(results, 600.0, "machine: 2 CPUs, fp32 GEMM 160 → 158 GFLOP/s")
    out = capsys.readouterr().out
    assert "finished in 10.0 min" in out and "cached" in out and "61 s" in out
    assert "machine: 2 CPUs, fp32 GEMM 160 → 158 GFLOP/s" in out
    assert "EasyVQA_TEST/Overall" in out and "87.50" in out
    assert "/w/sft/s  (resumed from step 40)" in out
    assert out.count("resumed from") == 1
    assert "vlora-local version 3 aliases ['candidate']" in out
