"""Connecting to Ray: a remote cluster (RAY_ADDRESS / config) or a private local one.

A local cluster binds to 127.0.0.1, has no dashboard and no usage stats, and is shut down when
the process exits (ray.init registers that). We never run `ray stop`: it kills every Ray process
on the machine, other users' included.
"""

from __future__ import annotations

import logging
import os

from pydantic import BaseModel, ConfigDict, Field

from pipelines.core import verbosity
from vlora.utils.env import OFFLINE_DEFAULTS, apply_offline_defaults

logger = logging.getLogger(__name__)


class RayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(
        default=None,
        description="Ray cluster address ('auto', 'ray://host:10001'); None = $RAY_ADDRESS or a "
        "private local cluster on 127.0.0.1.",
    )
    num_cpus: int | None = Field(
        default=None,
        gt=0,
        description="Logical CPUs of a local cluster. More than the physical cores keeps Ray Data "
        "read tasks schedulable beside CPU actors on a 2-core machine (with 2, two 1-CPU actors "
        "leave none for the reads and the job hangs).",
    )
    object_store_memory_mb: int | None = Field(
        default=None,
        gt=0,
        description="Object store size of a local cluster (None = Ray's default).",
    )
    single_machine: bool = Field(
        default=False,
        description="Every node of the cluster runs on this machine (a test cluster from "
        "`python -m pipelines.core.local_cluster up`), so a loopback address reaches the same "
        "server from every node: loopback image sources (easyvqa, skimage, URLs on 127.0.0.1) "
        "may then be downloaded with distributor 'ray'. Checked: a node whose address is not a "
        "loopback one is an error.",
    )


# Settings that say which object store a workdir URL means and how to reach it: a node that
# lacks them reads another store (or none). The AWS_* variables are the AWS SDKs' own (boto3,
# s3fs and pyarrow read AWS_ENDPOINT_URL_S3; credentials AWS_ACCESS_KEY_ID/…); FSSPEC_S3_*
# configure s3fs alone. Credentials travel in the job's runtime_env: on a cloud cluster prefer
# instance roles, so that none are set on the driver and none are forwarded.
FORWARDED_PREFIXES = ("AWS_", "FSSPEC_S3_", "MLFLOW_S3_", "MLFLOW_HTTP_REQUEST_")
FORWARDED_KEYS = (
    "VLORA_CACHE_DIR",
    "HF_HOME",
    "TORCH_EXTENSIONS_DIR",
    "DS_ACCELERATOR",
    *verbosity.FORWARDED_VARIABLES,  # how loud the run is, decided by the driver
)


def worker_env() -> dict[str, str]:
    """Environment forwarded to every Ray worker: offline defaults, cache locations and the
    object-store settings of this driver."""
    env = apply_offline_defaults()
    for key, value in os.environ.items():
        if key in FORWARDED_KEYS or key.startswith(FORWARDED_PREFIXES):
            env[key] = value
    return {k: v for k, v in env.items() if k in OFFLINE_DEFAULTS or k in os.environ}


def ensure_ray(config: RayConfig | None = None) -> None:
    """Initialise Ray once per process (a no-op when already connected)."""
    import ray

    config = config or RayConfig()
    apply_offline_defaults()
    if ray.is_initialized():
        return
    address = config.address or os.environ.get("RAY_ADDRESS")
    runtime_env = {"env_vars": worker_env()}
    if address:
        logger.info("connecting to the Ray cluster at %s", address)
        join_cluster(address)
        if config.single_machine:
            check_single_machine()
        verbosity.quiet_ray_data()
        return
    _bind_local_cluster_to_loopback()
    num_cpus = config.num_cpus or max(4, 2 * (os.cpu_count() or 1))
    logger.info("starting a private local Ray cluster on 127.0.0.1 (%d logical CPUs)", num_cpus)
    ray.init(
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=num_cpus,
        num_gpus=0 if not _has_cuda() else None,
        object_store_memory=(config.object_store_memory_mb or 512) * 1024 * 1024,
        runtime_env={**runtime_env, "worker_process_setup_hook": QUIET_HOOK},
        log_to_driver=True,
        configure_logging=True,
        logging_level=logging.WARNING,
    )
    verbosity.quiet_ray_data()


QUIET_HOOK = "pipelines.core.ray_cluster.quiet_dashboardless_warnings"
STATE_API_WARNING = "State API may be temporarily unavailable"


class _DropStateApiWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return STATE_API_WARNING not in record.getMessage()


def quiet_dashboardless_warnings() -> None:
    """Worker setup hook of the private local cluster, which runs without a dashboard.

    Ray Train's PlacementGroupCleaner asks the State API (served by the dashboard) every second
    whether the train controller is alive, and warns each time it cannot: hundreds of lines per
    local training run, none actionable. Only that message is dropped; on a cluster with a
    dashboard the hook is not installed and the warning would mean something.
    """
    logging.getLogger(
        "ray.train.v2._internal.execution.controller.placement_group_cleaner"
    ).addFilter(_DropStateApiWarnings())


def join_cluster(address: str) -> None:
    """Connect this process as one more driver to a running cluster (e.g. from a child process
    of the pipeline's driver). A private loopback cluster is joined on 127.0.0.1: Ray would
    otherwise look for a node at this machine's routable IP and find none."""
    import ray

    runtime_env = {"env_vars": worker_env()}
    if is_loopback(address.split(":", 1)[0]):
        _bind_local_cluster_to_loopback()
        ray.init(
            address=address,
            _node_ip_address="127.0.0.1",
            runtime_env=runtime_env,
            log_to_driver=True,
            logging_level=logging.WARNING,
        )
        return
    ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)


def is_loopback(host: str) -> bool:
    return host in {"localhost", "::1"} or host.startswith("127.")


def alive_node_addresses() -> list[str]:
    import ray

    return [node["NodeManagerAddress"] for node in ray.nodes() if node.get("Alive")]


def check_single_machine() -> None:
    """`ray.single_machine` holds: every alive node listens on a loopback address (a node
    that registered with a loopback address reached the head through this machine's loopback,
    so it runs here)."""
    remote = sorted({a for a in alive_node_addresses() if not is_loopback(a)})
    if remote:
        raise ValueError(
            f"ray.single_machine: the cluster has nodes at {remote}, not on this machine's "
            "loopback; loopback sources would not reach them (unset ray.single_machine)"
        )


def cluster_address() -> str:
    """The GCS address of the cluster this process is connected to (for child drivers)."""
    import ray

    return ray.get_runtime_context().gcs_address


def _bind_local_cluster_to_loopback() -> None:
    """Make a single-node cluster listen on 127.0.0.1 only.

    `ray.init(_node_ip_address="127.0.0.1")` is not enough: Ray resolves a loopback address to
    the machine's routable IP and binds every server there. With cluster mode off (the switch
    Ray uses on macOS/Windows) the node IP is the loopback one and every server binds to it.
    The constant is also read at call time, so it is patched for an already-imported ray.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False
