"""The smoke chain under prefect_test_harness: completes, caches, reruns what a force implies."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_invalid_parameter_fails_before_any_stage(harness, tmp_path) -> None:
    from flows.vlora_flow import vlora

    workdir = tmp_path / "bad"
    with pytest.raises(ValueError, match=r"pretrain\.max_steps"):
        vlora(config="smoke", overrides=[f"workdir={workdir}", "pretrain.max_steps=-1"])
    with pytest.raises(KeyError, match="unknown stage"):
        vlora(config="smoke", overrides=[f"workdir={workdir}"], stages=["dowload"])
    assert not workdir.exists()  # nothing ran


def test_smoke_chain_caches_and_force_reruns_downstream_only(smoke_run) -> None:
    from flows.vlora_flow import vlora

    workdir, first = smoke_run
    overrides = [f"workdir={workdir}"]
    assert list(first) == ["download", "features", "pretrain", "sft", "eval", "register"]
    assert not any(result["cached"] for result in first.values())
    assert Path(first["sft"]["artifacts"]["model"], "vlora_config.json").is_file()
    assert first["eval"]["metrics"]
    assert first["register"]["summary"]["version"]
    check_artifacts_of_the_first_run()

    second = vlora(config="smoke", overrides=overrides)
    assert all(result["cached"] for result in second.values())
    assert {k: v["output_dir"] for k, v in second.items()} == {
        k: v["output_dir"] for k, v in first.items()
    }

    # eval, not an earlier stage: the same property (the forced stage and what follows rerun,
    # nothing before it) for a fifth of the time of retraining
    forced = vlora(config="smoke", overrides=overrides, force=["eval"])
    reran = {name for name, result in forced.items() if not result["cached"]}
    assert reran == {"eval", "register"}
    for name in ("download", "features", "pretrain", "sft"):
        assert forced[name]["output_dir"] == first[name]["output_dir"]
        assert forced[name]["fingerprint"] == first[name]["fingerprint"]
    for name in ("eval", "register"):
        assert forced[name]["fingerprint"] != first[name]["fingerprint"]


def check_artifacts_of_the_first_run() -> None:
    """Each stage and the chain published Markdown: counts, links, the eval table, loss curves."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.artifacts import artifact_key
    from pipelines.stages import STAGE_ORDER

    keys = [artifact_key(name, "smoke") for name in (*STAGE_ORDER, "chain")]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )
    markdown = {artifact.key: artifact.data for artifact in found}
    assert set(markdown) == set(keys)
    assert all(artifact.type == "markdown" for artifact in found)
    assert "| summary | value |" in markdown["smoke-download"]
    for stage in ("pretrain", "sft"):
        text = markdown[f"smoke-{stage}"]
        assert "| summary.loss_last |" in text or "| loss_last |" in text
        assert "data:image/png;base64," in text  # the loss curve, embedded
        assert "- model: `" in text  # the exported checkpoint's location
    assert "| metric | value |" in markdown["smoke-eval"]
    chain = markdown["smoke-chain"]
    assert "| eval metric | value |" in chain
    for stage in STAGE_ORDER:
        assert f"| {stage} | no |" in chain
