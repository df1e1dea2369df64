"""The ``score`` command end to end: subprocess on synthetic files, and ``main_score`` directly."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vlora.eval.cli import add_score_subparser, main_score

REPO_ROOT = Path(__file__).resolve().parents[3]


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vlora.eval.cli", "score", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )


def test_cli_subprocess_mme_prints_documented_keys(formats_dir: Path, tmp_path: Path) -> None:
    predictions = _write_jsonl(
        tmp_path / "p.jsonl",
        [{"index": i, "prediction": text} for i, text in enumerate(["Yes", "No", "Yes", "Yes"])],
    )
    completed = _run_cli(
        "--benchmark", "MME", "--data", str(formats_dir / "MME_synthetic.tsv"),
        "--predictions", str(predictions),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)  # exactly one JSON object on stdout
    assert result["perception"] == pytest.approx(200.0)
    assert result["cognition"] == pytest.approx(50.0)


def test_cli_subprocess_synthetic_mcq_file(tmp_path: Path, write_tsv, png_b64: str) -> None:
    header = ["index", "question", "hint", "A", "B", "C", "answer", "category", "image"]
    rows = [
        [0, "Multi-line\nquestion?", "", "red", "green", "blue", "B", "colour", png_b64],
        [1000000, "Multi-line\nquestion?", "", "green", "blue", "red", "A", "colour", "0"],
        [2000000, "Multi-line\nquestion?", "", "blue", "red", "green", "C", "colour", "0"],
    ]
    data = write_tsv("CCBench.tsv", header, rows)
    predictions = _write_jsonl(
        tmp_path / "p.jsonl",
        [{"index": 0, "prediction": "B"}, {"index": 1000000, "prediction": "(A)"},
         {"index": 2000000, "prediction": "green"}],
    )  # fmt: skip
    completed = _run_cli(
        "--benchmark", "CCBench", "--data", str(data), "--predictions", str(predictions)
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["Overall"] == pytest.approx(100.0)
    assert result["category"] == {"colour": 100.0}
    assert result["unresolved"] == 0


def test_cli_hallusion_string_indices(formats_dir: Path, tmp_path: Path, capsys) -> None:
    indices = [f"hallusion_VD_illusion_0_{f}_{q}" for f in (0, 1) for q in (0, 1)]
    answers = ["Yes", "No", "No", "Yes"]
    predictions = _write_jsonl(
        tmp_path / "p.jsonl",
        [{"index": i, "prediction": a} for i, a in zip(indices, answers, strict=True)],
    )
    status = main_score(
        ["--benchmark", "HallusionBench", "--data", str(formats_dir / "HallusionBench_synthetic.tsv"),
         "--predictions", str(predictions)]
    )  # fmt: skip
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert {key: result[key] for key in ("aAcc", "fAcc", "qAcc", "Overall")} == {
        "aAcc": 100.0, "fAcc": 100.0, "qAcc": 100.0, "Overall": 100.0,
    }  # fmt: skip


def test_bad_prediction_line_is_reported_with_its_number(
    formats_dir: Path, tmp_path: Path, capsys
) -> None:
    bad = tmp_path / "p.jsonl"
    bad.write_text(
        '{"index": 0, "prediction": "A"}\n\n{"index": 1, "prediction": 3}\n', encoding="utf-8"
    )
    status = main_score(
        ["--benchmark", "ScienceQA_TEST", "--data", str(formats_dir / "ScienceQA_TEST_synthetic.tsv"),
         "--predictions", str(bad)]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    assert "p.jsonl:3" in captured.err
    assert "'prediction' must be a string" in captured.err


def test_not_json_and_unknown_benchmark_errors(formats_dir: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "p.jsonl"
    bad.write_text("index=0\n", encoding="utf-8")
    data = str(formats_dir / "ScienceQA_TEST_synthetic.tsv")
    assert (
        main_score(["--benchmark", "ScienceQA_TEST", "--data", data, "--predictions", str(bad)])
        == 2
    )
    assert "p.jsonl:1: not valid JSON" in capsys.readouterr().err
    good = _write_jsonl(tmp_path / "g.jsonl", [{"index": 0, "prediction": "A"}])
    assert main_score(["--benchmark", "Nope", "--data", data, "--predictions", str(good)]) == 2
    assert "valid keys: MMBench_DEV_EN" in capsys.readouterr().err


def test_add_score_subparser_wires_into_a_parent_parser(
    formats_dir: Path, tmp_path: Path, capsys
) -> None:
    parser = argparse.ArgumentParser(prog="vlora")
    add_score_subparser(parser.add_subparsers(dest="command", required=True))
    predictions = _write_jsonl(
        tmp_path / "p.jsonl", [{"index": 0, "prediction": "A"}, {"index": 1, "prediction": "C"}]
    )
    args = parser.parse_args(
        ["score", "--benchmark", "ScienceQA_TEST", "--data", str(formats_dir / "ScienceQA_TEST_synthetic.tsv"),
         "--predictions", str(predictions)]
    )  # fmt: skip
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["Overall"] == pytest.approx(100.0)
