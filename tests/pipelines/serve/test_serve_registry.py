"""Registered versions: served through the registry's checksum check, refused when it fails, and
redeployed (pinned to their version number) to a Serve application."""

from __future__ import annotations

import http.server
import json
import os
import stat
import threading
from pathlib import Path
from typing import ClassVar

import jsonschema
import pytest
import yaml

from pipelines.register import register_checkpoint, set_alias
from pipelines.serve.config import ModelSettings
from pipelines.serve.model_source import ModelSourceError, load_model, resolve_model
from pipelines.serve.redeploy import (
    ServeTarget,
    deploy_to_dashboard,
    load_serve_config,
    patch_rayservice,
    pinned_serve_config,
)

NAME = "vlora-serve-test"
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_checkpoint) -> str:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    for key in ("first", "second"):
        version = register_checkpoint(
            tracking_uri=uri,
            experiment="serve-test",
            artifact_location=(root / "artifacts").as_uri(),
            model_dir=tiny_checkpoint,
            model_name=NAME,
            register_key=key,
            run_name=f"register-{key}",
            tags={"vlora.design": "vlora"},
            metrics={},
            documents={},
        )
    set_alias(uri, NAME, version.version, "production")  # version 2
    return uri


def settings(
    registry: str, cache: Path, model: str = f"models:/{NAME}@production"
) -> ModelSettings:
    return ModelSettings(model=model, tracking_uri=registry, cache_dir=str(cache))


def test_registry_alias_is_pinned_verified_and_loaded(registry, tmp_path) -> None:
    resolved = resolve_model(settings(registry, tmp_path))
    assert resolved.registry_version == "2" and resolved.version == f"models:/{NAME}/2"
    assert resolved.served_name == NAME and resolved.design == "vlora"
    model = load_model(resolved, settings(registry, tmp_path))
    assert model.kind == "vlora"
    assert (tmp_path / NAME / "2" / "model" / "vlora_config.json").is_file()  # cached per node


def test_registry_refuses_a_corrupt_copy_with_the_reason(registry, tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=registry, registry_uri=registry)
    source = client.get_model_version(NAME, "1").source  # file:///…/artifacts/<run>/artifacts/model
    bridge = Path(source.removeprefix("file://")) / "bridge.safetensors"
    original = bridge.read_bytes()
    try:
        bridge.write_bytes(original[:-8] + b"corrupt!")
        with pytest.raises(ModelSourceError, match=r"changed: \['bridge.safetensors'\]"):
            resolve_model(settings(registry, tmp_path, f"models:/{NAME}/1"))
    finally:
        bridge.write_bytes(original)
    with pytest.raises(ModelSourceError, match="no version or alias 'staging'"):
        resolve_model(settings(registry, tmp_path, f"models:/{NAME}@staging"))
    with pytest.raises(ModelSourceError, match="needs --tracking-uri"):
        resolve_model(ModelSettings(model=f"models:/{NAME}/1"))


def serve_config() -> dict:
    """The shipped Serve config, serving this test's registered model."""
    config = load_serve_config("infra/serve/vlora.yaml")
    config["applications"][0]["args"]["model"]["model"] = f"models:/{NAME}@production"
    return config


def test_redeploy_pins_the_production_version(registry) -> None:
    with pytest.raises(ValueError, match="serves 'vlora-paper'"):  # not another model's app
        pinned_serve_config(
            load_serve_config("infra/serve/vlora.yaml"), "vlora", NAME, registry, "production"
        )
    config, version = pinned_serve_config(serve_config(), "vlora", NAME, registry, "production")
    assert version == "2"
    (app,) = config["applications"]
    assert app["args"]["model"]["model"] == f"models:/{NAME}/2"
    assert app["args"]["model"]["tracking_uri"] == registry
    with pytest.raises(ValueError, match="no application"):
        pinned_serve_config(config, "other", NAME, registry, "production")


class _Dashboard(http.server.BaseHTTPRequestHandler):
    """Ray's dashboard Serve REST API as `serve deploy` uses it: PUT then GET the status."""

    received: ClassVar[list[dict]] = []
    status = "RUNNING"

    def do_PUT(self) -> None:
        length = int(self.headers["content-length"])
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:
        body = json.dumps(
            {"applications": {"vlora": {"status": type(self).status, "message": "m"}}}
        )
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args) -> None:
        pass


def test_redeploy_to_a_dashboard(registry) -> None:
    config, _ = pinned_serve_config(serve_config(), "vlora", NAME, registry, "production")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Dashboard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert deploy_to_dashboard(config, address, "vlora", 10)["status"] == "RUNNING"
        assert _Dashboard.received == [config]
        _Dashboard.status = "DEPLOY_FAILED"
        with pytest.raises(RuntimeError, match="DEPLOY_FAILED"):
            deploy_to_dashboard(config, address, "vlora", 10)
    finally:
        server.shutdown()


def test_redeploy_patches_the_rayservice(registry, tmp_path, monkeypatch) -> None:
    """kubectl receives a merge patch whose RayService still passes the CRD schema."""
    log = tmp_path / "kubectl.json"
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {log}\necho patched\n")
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    config, _ = pinned_serve_config(serve_config(), "vlora", NAME, registry, "production")
    assert patch_rayservice(config, "vlora-serve", "ml")["status"] == "PATCHED"
    args = log.read_text().splitlines()
    assert args[:8] == [
        "patch",
        "rayservice",
        "vlora-serve",
        "--namespace",
        "ml",
        "--type",
        "merge",
        "--patch",
    ]
    patch = json.loads(args[8])
    service = yaml.safe_load((REPO / "infra" / "kuberay" / "rayservice.yaml").read_text())
    service["spec"].update(patch["spec"])
    schema = json.loads(
        (REPO / "tests" / "infra" / "schemas" / "rayservice-v1.schema.json").read_text()
    )
    jsonschema.validate(service, schema)
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == config


def test_the_serve_deployment_parameters_validate() -> None:
    from pipelines.config.pipeline import load_pipeline_config

    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    (serve,) = [d for d in deployments if d["name"] == "serve"]
    assert serve["entrypoint"] == "flows/vlora_flow.py:vlora"
    params = serve["parameters"]
    assert params["stages"] == ["register"]
    target = ServeTarget.model_validate(params["serve"])
    assert target.kind == "rayservice"
    service = yaml.safe_load((REPO / "infra" / "kuberay" / "rayservice.yaml").read_text())
    assert target.rayservice == service["metadata"]["name"]
    load_pipeline_config(params["config"])
    # the other deployments, and the local chain, never deploy
    assert all("serve" not in d.get("parameters", {}) for d in deployments if d is not serve)
