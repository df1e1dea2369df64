"""One multi-node cluster on this machine for the tests of this folder (`-m cluster`).

A Ray head without CPUs and two worker nodes, each a separate `ray start`, an S3 server (moto)
as the workdir, an MLflow server and a Prefect server with a process worker: everything on
127.0.0.1, started by `pipelines.core.local_cluster` and checked to be gone afterwards.
"""

from __future__ import annotations

import os

import pytest

from pipelines.core.local_cluster import LocalCluster, LocalClusterSpec

# what a smoke chain on the cluster adds to the smoke config: the download as Ray tasks, two
# feature and eval actors, and the training workers on different nodes. Ray's SPREAD is a
# preference: an actor of 2 CPUs on nodes of 3 fits one per node (the CPU left runs Ray Data's
# read tasks), so the two actors are on different nodes; small eval batches give both work.
CPUS_PER_WORKER = 3
SPREAD_OVERRIDES = [
    "download.distributor=ray",
    "features.num_actors=2",
    "features.cpus_per_actor=2",
    "eval.num_actors=2",
    "eval.cpus_per_actor=2",
    "eval.batch_size=2",
    "pretrain.placement_strategy=STRICT_SPREAD",
    "sft.placement_strategy=STRICT_SPREAD",
]


@pytest.fixture(scope="session")
def cluster():
    import ray
    import s3fs

    if ray.is_initialized():  # another test's private cluster: this process joins ours
        ray.shutdown()
    spec = LocalClusterSpec(
        workers=2, cpus_per_worker=CPUS_PER_WORKER, prefect=True, lifetime_s=3000
    )
    local = LocalCluster(spec)
    local.start()
    saved = {key: os.environ.get(key) for key in local.client_env()}
    os.environ.update(local.client_env())  # this process reads the bucket like a driver
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield local
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        s3fs.S3FileSystem.clear_instance_cache()
        survivors = local.stop()
        assert not survivors, f"processes outlived the cluster: {survivors}"
