"""`prefect deployment run vlora/full-pipeline` with the smoke config on a multi-node cluster:
an s3:// workdir, an MLflow server, Ray tasks, actors and training workers on two worker nodes.
The stage summaries record where the work ran: both worker nodes took part in every distributed
stage, and the head (no CPUs, as a cloud head node) in none."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from pipelines.core import fs
from tests.cluster.conftest import CPUS_PER_WORKER, SPREAD_OVERRIDES

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
WORKERS = {"worker-1", "worker-2"}


def prefect(cluster, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {
        **dict(__import__("os").environ),
        **cluster.client_env(),
        "PREFECT_HOME": str(cluster.root / "prefect-home"),
    }
    return subprocess.run(
        [PREFECT, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def stage_results(workdir: str) -> dict[str, dict]:
    """Stage name → the `result` of its finished manifest (one run per stage here)."""
    filesystem, root = fs.filesystem(workdir)
    out = {}
    for path in filesystem.find(root):
        if path.endswith("/_MANIFEST.json"):
            result = fs.read_json(filesystem.unstrip_protocol(path))["result"]
            out[result["stage"]] = result
    return out


def node_names(placement: dict) -> set[str]:
    return {share["node"]["labels"].get("vlora/node", "?") for share in placement["nodes"]}


def test_listening_on_loopback_only(cluster) -> None:
    addresses = set()
    for process in cluster.processes.values():
        for member in process.members():
            try:
                connections = member.net_connections(kind="inet")
            except psutil.Error:
                continue
            addresses |= {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN}
    assert addresses and addresses <= {"127.0.0.1", "::ffff:127.0.0.1"}, addresses
    nodes = {n["name"]: n["cpus"] for n in cluster.alive_nodes()}
    assert nodes == {"head": 0.0, "worker-1": CPUS_PER_WORKER, "worker-2": CPUS_PER_WORKER}


def test_full_pipeline_deployment_spreads_over_the_worker_nodes(cluster) -> None:
    deployed = prefect(cluster, "--no-prompt", "deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    overrides = [*cluster.run_overrides("runs/chain"), *SPREAD_OVERRIDES]
    run = prefect(
        cluster,
        "deployment",
        "run",
        "vlora/full-pipeline",
        "-p",
        'config="smoke"',
        "-p",
        f"overrides={json.dumps(overrides)}",
        "--watch",
        "--watch-timeout",
        "1500",
        timeout=1600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]

    results = stage_results(cluster.workdir("runs/chain"))
    assert set(results) == {"download", "features", "pretrain", "sft", "eval", "register"}
    summaries = {stage: r["summary"] for stage, r in results.items()}
    spread = {
        "download": summaries["download"]["placement"],  # img2dataset shards as Ray tasks
        "features": summaries["features"]["placement"],  # encoder actors
        "pretrain": summaries["pretrain"]["placement"]["final"],  # training ranks
        "sft": summaries["sft"]["placement"]["final"],
        "eval": summaries["eval"]["placement"],  # generation actors
    }
    for stage, placement in spread.items():
        assert node_names(placement) == WORKERS, (stage, placement)  # both, and not the head
    assert summaries["download"]["placement"]["failed_tasks"] == 0
    assert summaries["sft"]["strategy"] == "deepspeed-zero2"
    # the model is registered on the MLflow server once, its files in the bucket
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=cluster.mlflow_uri, registry_uri=cluster.mlflow_uri)
    versions = client.search_model_versions("name='vlora-smoke'")
    assert [v.version for v in versions] == ["1"]
    filesystem, _ = fs.filesystem(f"s3://{cluster.spec.bucket}")
    assert filesystem.find(f"{cluster.spec.bucket}/mlflow-artifacts")  # proxied to the store
