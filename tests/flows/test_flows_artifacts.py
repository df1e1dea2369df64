"""The Markdown the flows publish, from StageResults (no Prefect needed)."""

from __future__ import annotations

import base64

from flows.artifacts import artifact_key, resume_note, stage_markdown
from flows.vlora_flow import chain_markdown
from pipelines.config import load_pipeline_config
from pipelines.core.stage import StageResult

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


def test_stage_markdown_has_counts_metrics_links_and_embedded_plots(tmp_path) -> None:
    curve = tmp_path / "loss_curve.png"
    curve.write_bytes(PNG)
    result = StageResult(
        stage="pretrain",
        key="abc",
        output_dir="/w/pretrain/abc",
        summary={
            "data": {"ok": 90, "skipped": {"too_long": 7, "no_caption": 3}},
            "resumed_from_steps": [40],
            "shards": list(range(20)),
        },
        metrics={"loss": 0.4321, "samples_per_s": 12.5},
        artifacts={"model": "/w/pretrain/abc/model", "loss_curve": str(curve)},
        seconds=12.34,
        fingerprint="f00",
    )
    text = stage_markdown(result)
    assert "ran in 12.3 s" in text and "`/w/pretrain/abc`" in text
    assert "| data.skipped.too_long | 7 |" in text  # skips by reason, one row each
    assert "| resumed_from_steps | [40] |" in text
    assert "| shards | 20 items: [0, 1, 2, 3, 4, 5, 6, 7] … |" in text  # long lists shortened
    assert "| loss | 0.4321 |" in text
    assert "- model: `/w/pretrain/abc/model`" in text
    assert f"![loss_curve](data:image/png;base64,{base64.b64encode(PNG).decode()})" in text
    cached = stage_markdown(result.model_copy(update={"cached": True}))
    assert "reused a finished result (cached)" in cached


def test_missing_plot_is_a_link_and_pipes_do_not_break_the_table() -> None:
    result = StageResult(
        stage="eval",
        key="k",
        output_dir="/w/eval/k",
        summary={"note": "a | b"},
        artifacts={"plot": "/nowhere/plot.png"},
    )
    text = stage_markdown(result)
    assert "- plot: `/nowhere/plot.png`" in text
    assert "| note | a / b |" in text


def test_chain_markdown_lists_stages_resumes_and_scores(tmp_path) -> None:
    config = load_pipeline_config("smoke", [f"workdir={tmp_path}"])
    results = {
        "download": {"cached": True, "seconds": 0.0, "output_dir": "/w/d"},
        "sft": {
            "cached": False,
            "seconds": 80.0,
            "output_dir": "/w/s",
            "summary": {"resumed_from_steps": [4, 8]},
        },
        "eval": {"cached": False, "seconds": 9.0, "output_dir": "/w/e", "metrics": {"A/B": 50.0}},
    }
    text = chain_markdown(config, results)
    assert "| download | yes | 0.0 | `/w/d` |  |" in text
    assert "| sft | no | 80.0 | `/w/s` | resumed from step 4, 8 |" in text
    assert "| A/B | 50.00 |" in text
    assert resume_note(results["download"]) == ""


def test_artifact_keys_are_what_prefect_accepts() -> None:
    assert artifact_key("eval", "My_Run.2") == "my-run-2-eval"
