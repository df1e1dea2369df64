"""(Re)deploy a registered version to a cluster's Serve application (the Prefect `vlora/serve`).

The Serve config `infra/serve/vlora.yaml` names `models:/NAME@production`; the deployed copy
names the version number the alias points at now (`pinned_serve_config`), so a rollout loads one
version on every replica and the deployed config says which one. Two targets:

- `ray_dashboard`: `PUT /api/serve/applications/` on the cluster's dashboard, what
  `serve deploy` does, then wait until the application is RUNNING (the cluster launcher's
  cluster, a plain RayCluster);
- `rayservice`: a merge patch of the RayService's `spec.serveConfigV2` with `kubectl`, so KubeRay
  rolls it out and keeps it (a config PUT behind KubeRay's back would be replaced by the CR's
  on the next cluster it creates). Needs kubectl and `patch` rights on `rayservices` where the
  flow runs.

A version without the production alias, or a config whose application does not become RUNNING,
fails the flow with the reason.
"""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from pipelines.serve.model_source import parse_registry_uri

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SERVE_CONFIG = "infra/serve/vlora.yaml"


class ServeTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["ray_dashboard", "rayservice"] = Field(
        default="ray_dashboard",
        description="ray_dashboard: PUT the config to the cluster's dashboard (serve deploy); "
        "rayservice: patch a KubeRay RayService's serveConfigV2 with kubectl.",
    )
    serve_config: str = Field(
        default=DEFAULT_SERVE_CONFIG,
        description="The Serve config to deploy (relative paths: to the repository).",
    )
    app_name: str = Field(default="vlora", description="The application in that config.")
    alias: str = Field(default="production", description="Registry alias to deploy.")
    dashboard_address: str = Field(
        default="http://127.0.0.1:8265", description="ray_dashboard: the dashboard's URL."
    )
    rayservice: str = Field(default="vlora-serve", description="rayservice: its name.")
    namespace: str = Field(default="default", description="rayservice: its namespace.")
    wait_s: float = Field(default=1800.0, gt=0, description="How long to wait for RUNNING.")


def load_serve_config(path: str) -> dict[str, Any]:
    file = Path(path) if Path(path).is_absolute() else REPO_ROOT / path
    return yaml.safe_load(file.read_text())


def pinned_serve_config(
    config: dict[str, Any], app_name: str, model_name: str, tracking_uri: str, alias: str
) -> tuple[dict[str, Any], str]:
    """`config` with the app's model set to models:/NAME/<version of alias>; returns the version."""
    from pipelines.serve.registry_cache import resolve_version

    version, _, _ = resolve_version(model_name, alias, tracking_uri)
    pinned = copy.deepcopy(config)
    apps = {app["name"]: app for app in pinned.get("applications", [])}
    if app_name not in apps:
        raise ValueError(f"serve_config: no application '{app_name}' (has {sorted(apps)})")
    args = apps[app_name].setdefault("args", {})
    model = args.setdefault("model", {})
    if isinstance(model, str):
        model = args["model"] = {"model": model}
    current = model.get("model", "")
    if current and (parsed := parse_registry_uri(current)) and parsed[0] != model_name:
        raise ValueError(f"serve_config: the app serves '{parsed[0]}', not '{model_name}'")
    model["model"] = f"models:/{model_name}/{version}"
    model["tracking_uri"] = tracking_uri
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(pinned)  # what serve deploy / KubeRay would refuse
    return pinned, version


def deploy_to_dashboard(
    config: dict[str, Any], address: str, app_name: str, wait_s: float
) -> dict[str, Any]:
    import httpx

    base = address.rstrip("/")
    response = httpx.put(f"{base}/api/serve/applications/", json=config, timeout=60)
    if response.status_code >= 400:
        raise RuntimeError(
            f"the dashboard refused the config: {response.status_code} {response.text}"
        )
    deadline = time.monotonic() + wait_s
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        details = httpx.get(f"{base}/api/serve/applications/", timeout=60).json()
        status = details.get("applications", {}).get(app_name, {})
        if status.get("status") == "RUNNING":
            return {"status": "RUNNING", "message": status.get("message", "")}
        if status.get("status") in {"DEPLOY_FAILED", "UNHEALTHY"}:
            raise RuntimeError(
                f"application {app_name}: {status.get('status')}: {status.get('message')}"
            )
        time.sleep(2)
    raise TimeoutError(f"application {app_name} not RUNNING after {wait_s:g} s: {status}")


def rayservice_patch(config: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"serveConfigV2": yaml.safe_dump(config, sort_keys=False)}}


def patch_rayservice(config: dict[str, Any], name: str, namespace: str) -> dict[str, Any]:
    command = [
        "kubectl",
        "patch",
        "rayservice",
        name,
        "--namespace",
        namespace,
        "--type",
        "merge",
        "--patch",
        json.dumps(rayservice_patch(config)),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except FileNotFoundError:
        raise RuntimeError("kubectl is not installed where this flow runs") from None
    if done.returncode != 0:
        raise RuntimeError(f"kubectl patch failed: {done.stderr.strip() or done.stdout.strip()}")
    return {"status": "PATCHED", "message": done.stdout.strip()}


def redeploy(target: ServeTarget, model_name: str, tracking_uri: str) -> dict[str, Any]:
    """Deploy the version `target.alias` points at; returns what was deployed where."""
    config, version = pinned_serve_config(
        load_serve_config(target.serve_config),
        target.app_name,
        model_name,
        tracking_uri,
        target.alias,
    )
    if target.kind == "ray_dashboard":
        outcome = deploy_to_dashboard(
            config, target.dashboard_address, target.app_name, target.wait_s
        )
        where = target.dashboard_address
    else:
        outcome = patch_rayservice(config, target.rayservice, target.namespace)
        where = f"rayservice/{target.rayservice} ({target.namespace})"
    logger.info("[serve] %s version %s → %s: %s", model_name, version, where, outcome["status"])
    return {
        "model": f"models:/{model_name}/{version}",
        "alias": target.alias,
        "target": target.kind,
        "where": where,
        **outcome,
    }
