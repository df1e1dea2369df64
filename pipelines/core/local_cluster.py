"""A multi-node Ray cluster on this machine, with the servers a cloud run talks to.

    python -m pipelines.core.local_cluster up            # until Ctrl-C (or --lifetime-s)
    python -m pipelines.core.local_cluster up --prefect  # … and a Prefect server + process worker

What runs (every server on 127.0.0.1, each in its own process group, see process_groups):

- a Ray head and `workers` worker nodes, each a separate `ray start --block` with its own
  temp dir, CPUs and a `vlora/node` label (`head`, `worker-1`, …). The head has no CPUs, so no
  task, actor or training worker is placed on it, as on a cloud cluster's head node. Token
  authentication is on, with a token of this cluster only.
- an S3-compatible server (moto) with one bucket: the workdir and Ray Train's storage;
- `mlflow server` (SQLite store, artifacts proxied to the bucket): tracking and registry;
- with `prefect`: `prefect server start` and a process worker on the `vlora-process` pool,
  whose flow runs get the cluster's client environment.

`client_env()` is what a driver needs to use it all (RAY_ADDRESS, the token, S3 endpoint and
keys, MLflow and Prefect URLs); `up` prints it as `export` lines. `run_overrides()` points a
pipeline config at the cluster. `kill_node` SIGKILLs every process of one node (a lost machine);
`add_node` starts a replacement. Everything stops on `stop()`, and by itself (the watchdog)
when the owner dies or the lifetime ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipelines.core.process_groups import ManagedProcess, Watchdog, free_port, stop_all
from vlora.utils.env import apply_offline_defaults

S3_KEYS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
WORK_POOL = "vlora-process"
REPO = Path(__file__).resolve().parents[2]


class LocalClusterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workers: int = Field(default=2, ge=1, description="Ray worker nodes (besides the head).")
    cpus_per_worker: int = Field(
        default=2, ge=1, description="Logical CPUs of each worker node (not tied to cores)."
    )
    object_store_mb: int = Field(default=256, ge=64, description="Object store of each node.")
    bucket: str = Field(default="vlora", description="The S3 bucket created on the server.")
    mlflow: bool = Field(default=True, description="Start an MLflow tracking server.")
    prefect: bool = Field(default=False, description="Start a Prefect server and worker.")
    lifetime_s: float = Field(
        default=3600.0, gt=0, description="Everything is stopped after this long, whatever happens."
    )
    root: str | None = Field(
        default=None,
        description="Folder for temp dirs, logs and stores; None = a new short folder in /tmp "
        "(Ray's socket paths must stay under 108 characters).",
    )


def wait_http(url: str, timeout: float, process: ManagedProcess) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{process.name}: {url} not up in {timeout:.0f} s\n{process.log_tail()}")


class LocalCluster:
    """Start with `start()` (or `with LocalCluster(spec) as cluster:`), stop with `stop()`."""

    def __init__(self, spec: LocalClusterSpec | None = None) -> None:
        self.spec = spec or LocalClusterSpec()
        self.root = Path(self.spec.root or tempfile.mkdtemp(prefix="vlc-", dir="/tmp"))
        self.processes: dict[str, ManagedProcess] = {}
        self.watchdog: Watchdog | None = None
        self.ray_port = free_port()
        self.s3_port = free_port()
        self.mlflow_port = free_port()
        self.prefect_port = free_port()
        self.token_path = self.root / "auth_token"

    # ----- addresses --------------------------------------------------------------------------
    @property
    def ray_address(self) -> str:
        return f"127.0.0.1:{self.ray_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def prefect_api(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    def ray_auth_env(self) -> dict[str, str]:
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)}

    def s3_env(self) -> dict[str, str]:
        endpoint = self.s3_endpoint
        return {
            **S3_KEYS,
            "AWS_ENDPOINT_URL_S3": endpoint,  # boto3, s3fs (aiobotocore) and pyarrow
            "FSSPEC_S3_ENDPOINT_URL": endpoint,  # s3fs through fsspec's config
            "MLFLOW_S3_ENDPOINT_URL": endpoint,
        }

    def client_env(self) -> dict[str, str]:
        """What a driver (a test, `python -m flows`, a Prefect worker) sets to use the cluster."""
        env = {"RAY_ADDRESS": self.ray_address, **self.ray_auth_env(), **self.s3_env()}
        if self.spec.mlflow:
            env["MLFLOW_TRACKING_URI"] = self.mlflow_uri
        if self.spec.prefect:
            env["PREFECT_API_URL"] = self.prefect_api
        return env

    def run_overrides(self, run: str) -> list[str]:
        """`--set` overrides that run a pipeline config on this cluster, in `s3://bucket/run`."""
        overrides = [
            f"ray.address={self.ray_address}",
            "ray.single_machine=true",
            f"workdir=s3://{self.spec.bucket}/{run}",
        ]
        if self.spec.mlflow:
            overrides.append(f"tracking.mlflow_tracking_uri={self.mlflow_uri}")
        return overrides

    def workdir(self, run: str) -> str:
        return f"s3://{self.spec.bucket}/{run}"

    # ----- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        import os

        env = {**os.environ, **apply_offline_defaults(), **extra}
        for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):  # a node is told where its head is
            env.pop(key, None)
        return env

    def _launch(self, name: str, argv: list[str], extra_env: dict[str, str]) -> ManagedProcess:
        process = ManagedProcess(
            name, argv, self.root / "logs" / f"{name}.log", self._env(extra_env)
        )
        assert self.watchdog is not None
        self.watchdog.register(process)
        self.processes[name] = process
        return process

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.token_path.write_text(secrets.token_hex(32))
        self.token_path.chmod(0o600)
        self.watchdog = Watchdog(self.spec.lifetime_s)
        try:
            self._start_s3()
            self._start_ray()
            if self.spec.mlflow:
                self._start_mlflow()
            if self.spec.prefect:
                self._start_prefect()
        except BaseException:
            self.stop()
            raise
        (self.root / "cluster.json").write_text(json.dumps(self.describe(), indent=2))

    def _start_s3(self) -> None:
        moto = self._launch(
            "s3",
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.s3_port)],
            {},
        )
        wait_http(self.s3_endpoint, 60, moto)
        import boto3

        boto3.client("s3", endpoint_url=self.s3_endpoint, **_boto_keys()).create_bucket(
            Bucket=self.spec.bucket
        )

    def _ray_node_argv(self, name: str, head: bool) -> list[str]:
        argv = [sys.executable, "-m", "pipelines.core.loopback_ray_node", "--block"]
        argv += ["--node-ip-address", "127.0.0.1", "--temp-dir", str(self.root / name)]
        argv += ["--num-gpus", "0", "--labels", f"vlora/node={name}", "--disable-usage-stats"]
        argv += ["--object-store-memory", str(self.spec.object_store_mb * 1024 * 1024)]
        if head:
            return [
                *argv,
                "--head",
                "--port",
                str(self.ray_port),
                "--num-cpus",
                "0",
                "--include-dashboard",
                "false",
            ]
        return [*argv, "--address", self.ray_address, "--num-cpus", str(self.spec.cpus_per_worker)]

    def _start_ray(self) -> None:
        head = self._launch("head", self._ray_node_argv("head", head=True), self.ray_auth_env())
        _wait_for_line(head, "Ray runtime started", 120)
        for index in range(1, self.spec.workers + 1):
            self.add_node(f"worker-{index}", wait=False)
        self.wait_for_nodes({f"worker-{i}" for i in range(1, self.spec.workers + 1)})

    def add_node(self, name: str, wait: bool = True) -> ManagedProcess:
        """Start worker node `name` (a new one, or a replacement for a killed one)."""
        old = self.processes.get(name)
        if old is not None and old.alive():
            raise RuntimeError(f"node {name} is still running")
        # a killed node stays listed as alive until the GCS misses its heartbeats
        earlier = {n["node_id"] for n in self.alive_nodes() if n["name"] == name} if old else set()
        node = self._launch(name, self._ray_node_argv(name, head=False), self.ray_auth_env())
        if wait:
            self.wait_for_nodes({name}, not_ids=earlier)
        return node

    def kill_node(self, name: str) -> list[str]:
        """SIGKILL every process of worker node `name` at once (raylet, workers, agents);
        returns the node ids it had (for `wait_for_dead`)."""
        if not name.startswith("worker-"):
            raise ValueError(f"only worker nodes are killed in drills, not '{name}'")
        ids = [n["node_id"] for n in self.alive_nodes() if n["name"] == name]
        self.processes[name].kill()
        return ids

    def node_ids(self, name: str) -> list[str]:
        return [n["node_id"] for n in self.alive_nodes() if n["name"] == name]

    def alive_nodes(self) -> list[dict[str, Any]]:
        """Alive nodes as the GCS sees them: [{name, node_id, cpus}], asked in a subprocess so
        that this process stays free to join (or not) the cluster itself."""
        out = subprocess.run(
            [sys.executable, "-m", "pipelines.core.local_cluster", "nodes", self.ray_address],
            env=self._env(self.ray_auth_env()),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"listing the nodes failed: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def wait_for_nodes(
        self, names: set[str], not_ids: set[str] = frozenset(), timeout: float = 180
    ) -> None:
        """Until a node of each name is alive (one whose id is not in `not_ids`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = self.alive_nodes()
            if names <= {n["name"] for n in alive if n["node_id"] not in not_ids}:
                return
            for name in names:
                if not self.processes[name].alive():
                    raise RuntimeError(f"node {name} exited:\n{self.processes[name].log_tail()}")
            time.sleep(1)
        raise TimeoutError(f"nodes {sorted(names)} did not join in {timeout:.0f} s")

    def _start_mlflow(self) -> None:
        mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
        server = self._launch(
            "mlflow",
            [
                mlflow_bin,
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.mlflow_port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination",
                f"s3://{self.spec.bucket}/mlflow-artifacts",
            ],
            self.s3_env(),
        )
        wait_http(f"{self.mlflow_uri}/health", 180, server)

    def _start_prefect(self) -> None:
        prefect_bin = str(Path(sys.executable).with_name("prefect"))
        env = {
            "PREFECT_HOME": str(self.root / "prefect-home"),
            "PREFECT_API_URL": self.prefect_api,
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(self.prefect_port),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
        }
        server = self._launch(
            "prefect-server",
            [
                prefect_bin,
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.prefect_port),
            ],
            env,
        )
        wait_http(f"{self.prefect_api}/health", 180, server)
        created = subprocess.run(
            [prefect_bin, "work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"],
            env=self._env(env),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if created.returncode != 0:
            raise RuntimeError(f"work pool: {created.stdout}{created.stderr}")
        worker_env = {**env, **self.client_env(), "VLORA_REPO_DIR": str(REPO)}
        self._launch(
            "prefect-worker", [prefect_bin, "worker", "start", "--pool", WORK_POOL], worker_env
        )

    def stop(self) -> list[str]:
        """Stop everything (workers, then the head, then the servers); returns what survived."""
        # the Prefect worker and the worker nodes first (their work may still write to the
        # servers), then the head, then the servers; each tier stopped at once
        tiers: dict[int, list[ManagedProcess]] = {}
        for name, process in self.processes.items():
            tier = 2 if name in ("s3", "mlflow", "prefect-server") else int(name == "head")
            tiers.setdefault(tier, []).append(process)
        survivors = []
        for tier in sorted(tiers):
            survivors += stop_all(tiers[tier])
        if self.watchdog is not None:
            self.watchdog.release()
            self.watchdog = None
        if not self.spec.root:
            shutil.rmtree(self.root, ignore_errors=True)
        return survivors

    def describe(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "ray_address": self.ray_address,
            "s3_endpoint": self.s3_endpoint,
            "bucket": self.spec.bucket,
            "mlflow_uri": self.mlflow_uri if self.spec.mlflow else None,
            "prefect_api": self.prefect_api if self.spec.prefect else None,
            "processes": {n: p.pgid for n, p in self.processes.items()},
            "client_env": self.client_env(),
        }


def _boto_keys() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_KEYS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_KEYS["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_KEYS["AWS_DEFAULT_REGION"],
    }


def _wait_for_line(process: ManagedProcess, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in process.log_tail(200):
            return
        if not process.alive():
            raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
        time.sleep(0.5)
    raise TimeoutError(f"{process.name}: no '{text}' in {timeout:.0f} s\n{process.log_tail()}")


def _print_nodes(address: str) -> None:
    """(subcommand `nodes`) One JSON line: the alive nodes of the cluster at `address`."""
    from pipelines.core.ray_cluster import join_cluster

    join_cluster(address)
    import ray

    nodes = [
        {
            "name": n.get("Labels", {}).get("vlora/node", n["NodeID"][:12]),
            "node_id": n["NodeID"],
            "cpus": n.get("Resources", {}).get("CPU", 0.0),
        }
        for n in ray.nodes()
        if n.get("Alive")
    ]
    print(json.dumps(nodes))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.core.local_cluster")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster and keep it up until Ctrl-C")
    for name, field in LocalClusterSpec.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            up.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=field.default,
                help=field.description,
            )
        else:
            up.add_argument(
                flag, default=field.default, type=_caster(field.annotation), help=field.description
            )
    nodes = sub.add_parser("nodes", help="print the alive nodes (JSON)")
    nodes.add_argument("address")
    args = parser.parse_args(argv)
    if args.command == "nodes":
        _print_nodes(args.address)
        return
    spec = LocalClusterSpec(**{k: getattr(args, k) for k in LocalClusterSpec.model_fields})
    deadline = time.monotonic() + spec.lifetime_s  # the watchdog's own deadline, or just before
    with LocalCluster(spec) as cluster:
        print("# the cluster is up; in another shell:")
        for key, value in cluster.client_env().items():
            print(f"export {key}={value}")
        overrides = " ".join(f"--set {o}" for o in cluster.run_overrides("runs/smoke"))
        print(f"# a pipeline on it: python -m flows smoke {overrides}")
        print(f"# logs: {cluster.root / 'logs'}; Ctrl-C stops everything", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while time.monotonic() < deadline and cluster.processes["head"].alive():
                time.sleep(1)


def _caster(annotation: Any):
    return {int: int, float: float}.get(annotation, str)


if __name__ == "__main__":
    main()
