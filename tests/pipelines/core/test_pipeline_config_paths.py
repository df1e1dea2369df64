"""PipelineConfig paths: a relative workdir is fixed to an absolute one, URLs are left alone."""

from __future__ import annotations

from pathlib import Path

from pipelines.config import load_pipeline_config


def test_relative_workdir_becomes_absolute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_pipeline_config("smoke", ["workdir=runs/x"])
    # Ray Train's storage path (pyarrow) rejects relative paths: found running `make run`
    assert config.workdir == str(tmp_path.resolve() / "runs" / "x")
    assert Path(config.workdir).is_absolute()


def test_url_workdir_is_kept() -> None:
    config = load_pipeline_config(
        "smoke", ["workdir=s3://bucket/runs", "tracking.mlflow_tracking_uri=http://127.0.0.1:5000"]
    )
    assert config.workdir == "s3://bucket/runs"
