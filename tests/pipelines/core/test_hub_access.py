"""`hub_downloads` in a run config decides HF_HUB_OFFLINE for the stages it runs, the driver's
already imported huggingface_hub and the Ray workers' environment included."""

from __future__ import annotations

import os

import huggingface_hub.constants
import pytest

import pipelines.download.stage
from pipelines.config import load_pipeline_config
from pipelines.core.ray_cluster import worker_env
from pipelines.core.stage import StageResult
from pipelines.stages import get_stage
from vlora.utils.env import set_hub_access


@pytest.fixture
def offline_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The test environment's offline state, restored after the test whatever it changes."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return monkeypatch


def test_set_hub_access_sets_both_variables_and_the_imported_constant(offline_env) -> None:
    assert set_hub_access(None) is False
    assert set_hub_access(True) is True
    assert os.environ["HF_HUB_OFFLINE"] == os.environ["TRANSFORMERS_OFFLINE"] == "0"
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False
    assert set_hub_access(None) is True  # None reads, changes nothing
    assert set_hub_access(False) is False
    assert os.environ["HF_HUB_OFFLINE"] == os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True


def test_either_variable_true_means_offline(offline_env) -> None:
    offline_env.setenv("HF_HUB_OFFLINE", "0")
    assert set_hub_access(None) is False  # TRANSFORMERS_OFFLINE=1 still blocks downloads
    offline_env.setenv("TRANSFORMERS_OFFLINE", "0")
    assert set_hub_access(None) is True


def _capture_stage_environment(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    seen: dict[str, object] = {}

    def fake_run(config, force: bool = False) -> StageResult:
        seen["env"] = os.environ["HF_HUB_OFFLINE"]
        seen["worker_env"] = worker_env()["HF_HUB_OFFLINE"]
        seen["constant"] = huggingface_hub.constants.HF_HUB_OFFLINE
        return StageResult(stage="download", key="k", output_dir="/nowhere")

    monkeypatch.setattr(pipelines.download.stage, "run", fake_run)
    return seen


def test_paper_config_turns_downloads_on_before_its_stage_runs(offline_env) -> None:
    seen = _capture_stage_environment(offline_env)
    config = load_pipeline_config("paper")
    assert config.hub_downloads is True
    get_stage("download")(config)
    assert seen == {"env": "0", "worker_env": "0", "constant": False}


def test_override_false_forces_offline_even_when_the_environment_allows(offline_env) -> None:
    offline_env.setenv("HF_HUB_OFFLINE", "0")
    offline_env.setenv("TRANSFORMERS_OFFLINE", "0")
    seen = _capture_stage_environment(offline_env)
    get_stage("download")(load_pipeline_config("paper", ["hub_downloads=false"]))
    assert seen["env"] == "1" and seen["worker_env"] == "1"


def test_unset_leaves_the_environment_as_it_is(offline_env) -> None:
    seen = _capture_stage_environment(offline_env)
    config = load_pipeline_config("local")
    assert config.hub_downloads is None
    get_stage("download")(config)
    assert seen["env"] == "1"
    offline_env.setenv("HF_HUB_OFFLINE", "0")
    get_stage("download")(config)
    assert seen["env"] == "0"


def test_invalid_value_names_the_field() -> None:
    with pytest.raises(ValueError, match="hub_downloads"):
        load_pipeline_config("paper", ["hub_downloads=sometimes"])
