"""The MLflow registry library: register, alias, reuse by key, load verified, refuse corruption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipelines.register import (
    ChecksumError,
    load_registered_model,
    load_registered_vlora,
    register_checkpoint,
    set_alias,
)
from pipelines.register.checksums import CHECKSUM_FILE
from vlora.model import VLoRAModel


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = VLoRAModel.from_preset("tiny-llama")
    for param in model.generator.parameters():  # W_s starts at zero: make the weights non-trivial
        torch.nn.init.normal_(param, std=0.02)
    return model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "model")


def _register(tmp_path: Path, checkpoint: Path, key: str = "k1", **extra):
    root = tmp_path / "mlflow"
    root.mkdir(exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    version = register_checkpoint(
        tracking_uri=uri,
        experiment="vlora-test",
        artifact_location=(root / "artifacts").as_uri(),
        model_dir=checkpoint,
        model_name="vlora-test-model",
        register_key=key,
        run_name="test-register",
        tags={"vlora.design": "vlora", "vlora.lineage.sft": "abc123"},
        metrics={"EasyVQA_TEST/Overall": 81.5},
        documents={"lineage": {"sft": {"fingerprint": "abc123"}}},
        **extra,
    )
    return uri, version


def test_register_load_roundtrip_and_reuse(tmp_path, checkpoint) -> None:
    from mlflow.tracking import MlflowClient

    uri, version = _register(tmp_path, checkpoint)
    assert (version.version, version.aliases, version.reused) == ("1", ["candidate"], False)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    stored = client.get_model_version("vlora-test-model", "1")
    assert stored.tags["vlora.lineage.sft"] == "abc123"
    assert stored.tags["vlora.register_key"] == "k1"
    run = client.get_run(version.run_id)
    assert run.data.metrics["EasyVQA_TEST/Overall"] == 81.5
    # artifacts live where we said, never in a cwd-relative ./mlruns
    assert (tmp_path / "mlflow" / "artifacts").is_dir()

    # the same key again (a crash after registering): the version is reused, not duplicated
    _, again = _register(tmp_path, checkpoint)
    assert (again.version, again.reused) == ("1", True)
    _, second = _register(tmp_path, checkpoint, key="k2")
    assert second.version == "2"
    assert set_alias(uri, "vlora-test-model", "2", "production") == ["candidate", "production"]

    loaded_dir = load_registered_model("vlora-test-model", "production", uri, tmp_path / "dl")
    assert json.loads((loaded_dir / "vlora_config.json").read_text())["kind"] == "vlora"
    original = VLoRAModel.from_pretrained(checkpoint)
    loaded = load_registered_vlora("vlora-test-model", "1", uri, tmp_path / "dl1")
    for (name, a), (_, b) in zip(
        original.generator.state_dict().items(), loaded.generator.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name

    with pytest.raises(LookupError, match="no version or alias 'staging'"):
        load_registered_model("vlora-test-model", "staging", uri, tmp_path / "dl2")


def _artifact_root(tmp_path: Path, run_id: str) -> Path:
    [root] = [p for p in (tmp_path / "mlflow" / "artifacts").rglob(run_id) if p.is_dir()]
    return root / "artifacts"


def test_corrupted_artifact_is_refused_naming_the_file(tmp_path, checkpoint) -> None:
    uri, version = _register(tmp_path, checkpoint)
    weights = _artifact_root(tmp_path, version.run_id) / "model" / "bridge.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"changed: \['bridge.safetensors'\]"):
        load_registered_model("vlora-test-model", "candidate", uri, tmp_path / "dl")


def test_rewritten_checksum_list_is_refused(tmp_path, checkpoint) -> None:
    uri, version = _register(tmp_path, checkpoint)
    root = _artifact_root(tmp_path, version.run_id)
    (root / "model" / "extra.bin").write_bytes(b"injected")
    with pytest.raises(ChecksumError, match=r"unexpected: \['extra.bin'\]"):
        load_registered_model("vlora-test-model", "1", uri, tmp_path / "dl")
    listing = root / CHECKSUM_FILE
    checksums = json.loads(listing.read_text())
    checksums["extra.bin"] = "0" * 64  # an attacker or a bad sync updating the list too
    listing.write_text(json.dumps(checksums))
    with pytest.raises(ChecksumError, match="does not match the digest recorded"):
        load_registered_model("vlora-test-model", "1", uri, tmp_path / "dl2")
