"""Run img2dataset in a child process: `python -m pipelines.download.img2dataset_runner JOB_JSON`.

Why a child process: img2dataset starts its workers with the `spawn` method, which re-imports
the parent's `__main__`; without an `if __name__ == "__main__":` guard there (pytest, a Prefect
worker, a notebook) it hangs. This module is that guarded main. It also keeps img2dataset's
global side effects (its SIGINT handler, its logger process, the StrictResizer swap) out of the
calling process, and its chatty output in a log file.

With `distributor="ray"` the child joins the pipeline's Ray cluster and img2dataset submits one
task per shard there (its own ray distributor); the parent's progress bar and shard checks do not
change, since every shard still ends in the shared output folder with its stats file.

Settings that are not optional here: `incremental_mode="incremental"` (its "overwrite" mode is
broken), wandb off, output format webdataset with 5-digit shard names, `url`/`caption` columns
as written by `pipelines.download.capsfusion`. The parent shows a progress bar over shards by
watching the `*_stats.json` files img2dataset writes when a shard is done.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines.core import fs
from pipelines.core.verbosity import progress_bars_enabled


@dataclass
class Img2DatasetJob:
    """One img2dataset run: `url_list` is a folder of chunk-*.parquet files (sorted by name)."""

    url_list: str
    output_folder: str
    image_size: int
    resize_mode: str
    resize_only_if_bigger: bool
    encode_quality: int
    processes: int
    threads: int
    timeout: int
    retries: int
    number_sample_per_shard: int
    save_additional_columns: list[str]
    distributor: str = "multiprocessing"
    ray_address: str | None = None  # the cluster the ray distributor joins (its GCS address)
    placement_url: str | None = None  # distributor ray: where each shard's task ran (JSON)

    def download_kwargs(self) -> dict[str, Any]:
        return {
            "url_list": self.url_list,
            "input_format": "parquet",
            "url_col": "url",
            "caption_col": "caption",
            "save_additional_columns": list(self.save_additional_columns),
            "output_format": "webdataset",
            "output_folder": self.output_folder,
            "image_size": self.image_size,
            "resize_mode": self.resize_mode,
            "resize_only_if_bigger": self.resize_only_if_bigger,
            "encode_quality": self.encode_quality,
            "encode_format": "jpg",
            "processes_count": self.processes,
            "thread_count": self.threads,
            "timeout": self.timeout,
            "retries": self.retries,
            "number_sample_per_shard": self.number_sample_per_shard,
            "incremental_mode": "incremental",
            "enable_wandb": False,
            "distributor": self.distributor,
            "extract_exif": False,
            "compute_hash": "sha256",
            "oom_shard_count": 5,
            "max_shard_retry": 1,
        }


class Img2DatasetError(RuntimeError):
    pass


def _child_env() -> dict[str, str]:
    from vlora.utils.env import OFFLINE_DEFAULTS

    env = dict(os.environ)
    for key, value in OFFLINE_DEFAULTS.items():
        env.setdefault(key, value)
    repo_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH")) if p)
    return env


def done_shards(output_folder: str) -> set[int]:
    """Shard ids img2dataset considers finished (same rule as its incremental mode)."""
    filesystem, path = fs.filesystem(output_folder)
    if not filesystem.exists(path):
        return set()
    names = (p.rsplit("/", 1)[-1] for p in filesystem.glob(path.rstrip("/") + "/*_stats.json"))
    return {int(n.split("_")[0]) for n in names if n.split("_")[0].isdigit()}


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen) -> None:
    """Stop the child and the workers it spawned (only processes this run started)."""
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        family = psutil.Process(process.pid).children(recursive=True)
        for proc in [psutil.Process(process.pid), *family]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        psutil.wait_procs(family, timeout=10)
    process.wait(timeout=10)


def _advance(bar: Any, done: int) -> None:
    if done > bar.n:
        bar.update(done - bar.n)


def run_img2dataset(job: Img2DatasetJob, log_path: Path, expected_shards: set[int]) -> float:
    """Run the job to completion in a child process (seconds taken); raises on failure."""
    from tqdm import tqdm

    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", __name__, json.dumps(asdict(job))]
    started = time.perf_counter()
    with open(log_path, "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command[:3])}\n")
        log.flush()
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=_child_env(), cwd=os.getcwd()
        )
        initial = len(done_shards(job.output_folder) & expected_shards)
        with tqdm(
            total=len(expected_shards),
            initial=initial,
            unit="shard",
            desc="img2dataset",
            disable=not progress_bars_enabled(),
        ) as bar:
            try:
                while process.poll() is None:
                    time.sleep(0.5)
                    _advance(bar, len(done_shards(job.output_folder) & expected_shards))
            except BaseException:
                _stop(process)
                raise
            _advance(bar, len(done_shards(job.output_folder) & expected_shards))
    if process.returncode != 0:
        raise Img2DatasetError(
            f"img2dataset exited with code {process.returncode}; last lines of {log_path}:\n"
            f"{_tail(log_path)}"
        )
    return time.perf_counter() - started


def ray_distributor_address(ray_config: Any, loopback_source: str | None) -> str:
    """The cluster the ray distributor's child joins: the pipeline's (started if need be).

    A source served on this machine's loopback (`loopback_source`: easyvqa, skimage, or URLs on
    127.0.0.1) is reachable from this machine only, so a cluster of several nodes is refused,
    unless `ray.single_machine` says (and the node addresses confirm) that every node runs here.
    """
    import ray

    from pipelines.core.ray_cluster import check_single_machine, cluster_address, ensure_ray

    ensure_ray(ray_config)
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    if loopback_source and len(nodes) > 1:
        if ray_config is not None and ray_config.single_machine:
            check_single_machine()
            return cluster_address()
        raise ValueError(
            f"download.distributor: 'ray' on a {len(nodes)}-node cluster cannot fetch "
            f"{loopback_source} images: they are served on this machine's loopback only; use "
            "distributor 'multiprocessing' for local sources (or, when every node runs on this "
            "machine, set ray.single_machine: true)"
        )
    return cluster_address()


def recording_ray_distributor(placement_url: str | None):
    """img2dataset's ray distributor (one task of 1 CPU per shard), recording each shard's node
    and outcome. A task whose node is lost is retried elsewhere (Ray's max_retries); a shard that
    still fails is recorded and left to the stage's shard check, which redoes it. The tasks are
    spread over the nodes (SPREAD): a download is bound by each node's network, not its CPUs."""
    import ray

    from pipelines.core.placement import this_node

    @ray.remote(num_cpus=1, max_retries=3, scheduling_strategy="SPREAD")
    def download_shard(downloader: Any, shard: Any) -> tuple[bool, dict]:
        ok, _ = downloader(shard)
        return ok, this_node().model_dump()

    def distributor(processes_count: int, downloader: Any, reader: Any, *_: Any) -> None:
        pending = {download_shard.remote(downloader, shard): int(shard[0]) for shard in reader}
        records: dict[int, dict[str, Any]] = {}
        try:
            while pending:
                (ready,), _ = ray.wait(list(pending), num_returns=1)
                shard_id = pending.pop(ready)
                try:
                    ok, node = ray.get(ready)
                    records[shard_id] = {"ok": ok, "node": node}
                except ray.exceptions.RayError as err:
                    records[shard_id] = {"ok": False, "error": str(err)[:300]}
                    print(f"img2dataset: shard {shard_id} failed: {err}", flush=True)
        finally:
            if placement_url:
                fs.write_json_atomic(placement_url, {str(k): v for k, v in records.items()})
                print(f"img2dataset: where {len(records)} shards ran: {placement_url}", flush=True)

    return distributor


def read_placement(url: str) -> dict[int, dict[str, Any]]:
    """The records a ray-distributed pass wrote (shard id → outcome and node); {} if none."""
    if not fs.exists(url):
        return {}
    return {int(k): v for k, v in fs.read_json(url).items()}


def main(argv: list[str]) -> int:
    from vlora.utils.env import apply_offline_defaults

    apply_offline_defaults()
    job = Img2DatasetJob(**json.loads(argv[1]))
    from pipelines.download import strict_resizer

    strict_resizer.install()
    if job.distributor == "ray":
        # img2dataset's ray distributor submits one task per shard to the Ray this process is
        # connected to: the cluster the pipeline runs on (the parent passes its address).
        from pipelines.core.ray_cluster import join_cluster

        if not job.ray_address:
            raise Img2DatasetError("distributor 'ray' needs the cluster's address")
        join_cluster(job.ray_address)
        import ray

        print(
            f"img2dataset: one Ray task per shard on the cluster at {job.ray_address} "
            f"({ray.cluster_resources().get('CPU', 0):g} CPUs)",
            flush=True,
        )
        import importlib

        # the module, not `img2dataset.main`: the package re-exports a function `main` under
        # that name, and patching the function's attribute left img2dataset's own distributor
        # in place (no shard placement was ever recorded)
        i2d_main = importlib.import_module("img2dataset.main")
        i2d_main.ray_distributor = recording_ray_distributor(job.placement_url)
    from img2dataset import download

    download(**job.download_kwargs())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
