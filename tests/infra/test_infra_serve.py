"""The serving manifests stay true to the code: the Serve config passes Ray Serve's own schema and
builds our settings, the RayService passes KubeRay's CRD schema and embeds that same config,
and both name real entry points, the pinned Ray and the project's image. No cluster needed."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SERVE_CONFIG = REPO / "infra" / "serve" / "vlora.yaml"
RAYSERVICE = REPO / "infra" / "kuberay" / "rayservice.yaml"
RAYSERVICE_SCHEMA = Path(__file__).parent / "schemas" / "rayservice-v1.schema.json"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def locked_version(package: str) -> str:
    for line in (REPO / "requirements" / "constraints.lock.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package:
            return version.strip()
    raise AssertionError(package)


def test_infra_serve_config_passes_ray_serves_schema() -> None:
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(load(SERVE_CONFIG))
    (app,) = config.applications
    assert app.name == "vlora" and app.route_prefix == "/"
    assert config.http_options.port == 8000
    env = app.runtime_env["env_vars"]
    assert env["RAY_USAGE_STATS_ENABLED"] == "0" and env["DO_NOT_TRACK"] == "1"


def test_infra_serve_config_builds_our_settings() -> None:
    from pipelines.serve.config import settings_from_args

    (app,) = load(SERVE_CONFIG)["applications"]
    module, _, name = app["import_path"].partition(":")
    assert callable(getattr(importlib.import_module(module), name))
    settings = settings_from_args(app["args"])
    assert settings.model.model.startswith("models:/")
    from pipelines.config.pipeline import load_pipeline_config

    paper = load_pipeline_config("paper")
    assert settings.model.model == f"models:/{paper.registered_model_name()}@production"
    assert settings.model.tracking_uri == paper.mlflow_uri()
    # listening on every address is only acceptable with a key on every request
    assert load(SERVE_CONFIG)["http_options"]["host"] == "0.0.0.0"
    assert settings.api.api_key_env and not settings.api.api_key
    assert settings.llm.num_gpus >= 1 and settings.encoder.num_gpus > 0
    options = settings.llm.ray_options()
    assert "autoscaling_config" in options and "num_replicas" not in options


def test_infra_rayservice_passes_the_crd_schema() -> None:
    schema = json.loads(RAYSERVICE_SCHEMA.read_text())
    jsonschema.validate(load(RAYSERVICE), schema)
    # and the check can fail: a misspelt field is refused
    broken = load(RAYSERVICE)
    broken["spec"]["rayClusterConfig"]["headGroupSpec"]["servicetype"] = "ClusterIP"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    missing = load(RAYSERVICE)
    del missing["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["groupName"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(missing, schema)


def test_infra_rayservice_embeds_the_serve_config() -> None:
    service = load(RAYSERVICE)
    assert service["apiVersion"] == "ray.io/v1" and service["kind"] == "RayService"
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == load(SERVE_CONFIG)


def test_infra_rayservice_cluster() -> None:
    cluster = load(RAYSERVICE)["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == locked_version("ray")
    head = cluster["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    reference = load(REPO / "infra" / "kuberay" / "raycluster.yaml")
    image = reference["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    groups = [head, *cluster["workerGroupSpecs"]]
    gpus = 0
    for group in groups:
        assert group["rayStartParams"]["disable-usage-stats"] == "true"
        (container,) = group["template"]["spec"]["containers"]
        assert container["image"] == image
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_USAGE_STATS_ENABLED"]["value"] == "0"
        # the bearer key comes from a Secret on every node that may run the ingress
        assert env["VLORA_SERVE_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "key"
        resources = container["resources"]
        assert resources["limits"] == resources["requests"]
        if group is not head:
            assert int(group["minReplicas"]) <= int(group["replicas"]) <= int(group["maxReplicas"])
            gpus += int(group["maxReplicas"]) * int(resources["limits"].get("nvidia.com/gpu", 0))
    from pipelines.serve.config import settings_from_args

    (app,) = load(SERVE_CONFIG)["applications"]
    settings = settings_from_args(app["args"])
    needed = (
        settings.llm.autoscaling["max_replicas"] * settings.llm.num_gpus
        + settings.encoder.num_replicas * settings.encoder.num_gpus
    )
    assert gpus >= needed
