"""The register stage on a fabricated finished chain: lineage, promotion, caching, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.config import load_pipeline_config
from pipelines.core.chain import stage_module, upstream_results
from pipelines.core.stage import run_stage
from pipelines.stages import STAGE_ORDER
from vlora.model import VLoRAModel


def _fabricate_chain(config, model_dir: Path, metrics: dict[str, float]) -> None:
    """Write finished manifests for download … eval, as the real stages would place them."""

    for name in STAGE_ORDER[:-1]:
        module = stage_module(name)
        artifacts = {"model": str(model_dir)} if name in ("sft", "eval") else {}
        produced = {"summary": {"fabricated": True}, "artifacts": artifacts}
        if name == "eval":
            produced["metrics"] = metrics
        run_stage(
            name,
            config.workdir,
            module.key_config(config),
            lambda _out, produced=produced: produced,
            upstream_results(config, name),
        )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return VLoRAModel.from_preset("tiny-llama").save_pretrained(
        tmp_path_factory.mktemp("ckpt") / "model"
    )


def _config(tmp_path: Path, thresholds: dict[str, float]):
    return load_pipeline_config(
        "smoke",
        [f"workdir={tmp_path / 'run'}", f"registry.thresholds={json.dumps(thresholds)}"],
    )


def test_register_promotes_only_when_thresholds_pass(tmp_path, model_dir) -> None:
    from pipelines.register import stage as register

    config = _config(tmp_path, {"EasyVQA_TEST/Overall": 50.0})
    _fabricate_chain(config, model_dir, {"EasyVQA_TEST/Overall": 62.0, "EasyVQA_YORN/Overall": 40})
    result = register.run(config)
    summary = result.summary
    assert (summary["model_name"], summary["version"]) == ("vlora-smoke", "1")
    assert summary["aliases"] == ["candidate", "production"] and summary["promoted"]
    record = json.loads(Path(result.artifacts["registration"]).read_text())
    assert set(record["lineage"]) == {"download", "features", "pretrain", "sft", "eval"}
    assert all(len(info["manifest_sha256"]) == 64 for info in record["lineage"].values())
    assert register.run(config).cached  # a rerun is a no-op

    # a stricter threshold: the new version is a candidate, production stays on version 1
    strict = _config(tmp_path, {"EasyVQA_TEST/Overall": 90.0})
    second = register.run(strict).summary
    assert (second["version"], second["aliases"], second["promoted"]) == ("2", ["candidate"], False)
    assert second["thresholds"] == [
        {"metric": "EasyVQA_TEST/Overall", "value": 62.0, "min": 90.0, "passed": False}
    ]
    from pipelines.register import load_registered_model

    production = load_registered_model(
        "vlora-smoke", "production", config.mlflow_uri(), tmp_path / "p"
    )
    assert (production / "vlora_config.json").is_file()


def test_threshold_errors_name_the_field(tmp_path, model_dir) -> None:
    from pipelines.register import stage as register

    with pytest.raises(ValueError, match=r"registry\.thresholds: \['MME/perception'\]"):
        _config(tmp_path, {"MME/perception": 1000})
    with pytest.raises(ValueError, match="'<BENCHMARK>/<metric>'"):
        _config(tmp_path, {"accuracy": 1})
    config = _config(tmp_path, {"EasyVQA_TEST/overall": 50})  # wrong case: not an eval metric
    _fabricate_chain(config, model_dir, {"EasyVQA_TEST/Overall": 62.0})
    with pytest.raises(ValueError, match=r"eval produced no metric \['EasyVQA_TEST/overall'\]"):
        register.run(config)
    assert not (Path(config.workdir) / "register").exists()  # failed before registering
