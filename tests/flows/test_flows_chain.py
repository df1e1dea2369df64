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
