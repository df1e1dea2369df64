"""The smoke chain under prefect_test_harness: completes, caches, reruns what a force implies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def test_invalid_parameter_fails_before_any_stage(harness, tmp_path) -> None:
    from flows.vlora_flow import vlora

    workdir = tmp_path / "bad"
    with pytest.raises(ValueError, match=r"pretrain\.max_steps"):
        vlora(config="smoke", overrides=[f"workdir={workdir}", "pretrain.max_steps=-1"])
    with pytest.raises(KeyError, match="unknown stage"):
        vlora(config="smoke", overrides=[f"workdir={workdir}"], stages=["dowload"])
    assert not workdir.exists()  # nothing ran


def test_smoke_chain_caches_and_force_reruns_downstream_only(harness, tmp_path) -> None:
    from flows.vlora_flow import vlora

    overrides = [f"workdir={tmp_path / 'run'}"]
    first = vlora(config="smoke", overrides=overrides)
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

    forced = vlora(config="smoke", overrides=overrides, force=["sft"])
    reran = {name for name, result in forced.items() if not result["cached"]}
    assert reran == {"sft", "eval", "register"}
    for name in ("download", "features", "pretrain"):
        assert forced[name]["output_dir"] == first[name]["output_dir"]
    for name in ("sft", "eval", "register"):
        assert forced[name]["fingerprint"] != first[name]["fingerprint"]
