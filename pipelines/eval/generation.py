"""Batched greedy generation for several benchmarks in one Ray Data pass.

The driver cuts every pending benchmark into prompt batches of ``eval.batch_size`` (fixed
composition, see ``actor``), one Ray Data block per batch, benchmark after benchmark; an actor pool
(``eval.num_actors`` actors, ``cpus_per_actor`` CPUs and ``gpus_per_actor`` GPUs each) answers
them and the driver gathers the answers as they stream back. As soon as every batch of a
benchmark is back, ``on_done(benchmark, predictions, seconds)`` runs (the stage writes that
benchmark's predictions and scores there), so a killed run keeps every finished benchmark.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipelines.config.eval import EvalConfig
from pipelines.core.placement import NodeRecord
from pipelines.eval.actor import GenerationActor
from pipelines.eval.prepare import PreparedBenchmark, prompt_input

logger = logging.getLogger(__name__)

OnBenchmarkDone = Callable[[PreparedBenchmark, list[str], "BenchmarkTiming"], None]


@dataclass
class BenchmarkTiming:
    """When the benchmark's last batch came back (seconds since the pass started, actor start-up
    and model loading included) and the actors' compute time on its batches."""

    rows: int
    finished_after_seconds: float = 0.0
    actor_seconds: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {
            "rows": self.rows,
            "finished_after_seconds": round(self.finished_after_seconds, 3),
            "actor_seconds": round(self.actor_seconds, 3),
            "prompts_per_s_actor": round(self.rows / self.actor_seconds, 3)
            if self.actor_seconds
            else 0.0,
        }


@dataclass
class _Pending:
    benchmark: PreparedBenchmark
    batches_left: int
    predictions: list[str | None] = field(default_factory=list)
    timing: BenchmarkTiming | None = None


def make_jobs(benchmarks: list[PreparedBenchmark], batch_size: int) -> list[dict]:
    """One row per prompt batch, in benchmark order then row order."""
    jobs = []
    for benchmark in benchmarks:
        for start in range(0, len(benchmark.prompts), batch_size):
            stop = start + batch_size
            jobs.append(
                {
                    "batch_id": len(jobs),
                    "benchmark": benchmark.key,
                    "start": start,
                    "prompts": benchmark.prompts[start:stop],
                    "image_ids": benchmark.image_ids[start:stop],
                    "max_new_tokens": benchmark.max_new_tokens,
                }
            )
    return jobs


def actor_device(eval_config: EvalConfig) -> str:
    return "cuda" if eval_config.gpus_per_actor > 0 else "cpu"


def generate_all(
    benchmarks: list[PreparedBenchmark],
    eval_config: EvalConfig,
    checkpoint: str,
    on_done: OnBenchmarkDone,
    nodes: list[NodeRecord] | None = None,
) -> dict[str, float]:
    """Answer every prompt of ``benchmarks`` (Ray must be initialised); returns pass timings.
    ``nodes`` (when given) receives the node of every prompt batch answered."""
    import ray
    import ray.data

    if not benchmarks:
        return {}
    jobs = make_jobs(benchmarks, eval_config.batch_size)
    pending = {
        b.key: _Pending(
            b,
            batches_left=sum(job["benchmark"] == b.key for job in jobs),
            predictions=[None] * len(b.prompts),
            timing=BenchmarkTiming(rows=len(b.prompts)),
        )
        for b in benchmarks
    }
    stores = {b.key: ray.put(b.images) for b in benchmarks}
    dataset = ray.data.from_items(jobs, override_num_blocks=len(jobs))
    answered = dataset.map_batches(
        GenerationActor,
        batch_size=1,
        batch_format="pyarrow",
        fn_constructor_kwargs={
            "checkpoint": checkpoint,
            "image_stores": stores,
            "prompt_input": prompt_input(eval_config),
            "device": actor_device(eval_config),
            "dtype": eval_config.dtype,
            "torch_threads": eval_config.torch_threads,
            "cpus_per_actor": eval_config.cpus_per_actor,
        },
        compute=ray.data.ActorPoolStrategy(size=eval_config.num_actors),
        num_cpus=eval_config.cpus_per_actor,
        num_gpus=eval_config.gpus_per_actor or None,
    )
    started = time.perf_counter()
    total_rows = sum(len(b.prompts) for b in benchmarks)
    logger.info("[eval] generating %d answers in %d batches", total_rows, len(jobs))
    for row in answered.iter_rows():
        state = pending[row["benchmark"]]
        assert state.timing is not None
        answers = list(row["predictions"])
        start = int(row["start"])
        state.predictions[start : start + len(answers)] = answers
        state.timing.actor_seconds += float(row["seconds"])
        if nodes is not None:
            nodes.append(NodeRecord.model_validate_json(row["node"]))
        state.batches_left -= 1
        if state.batches_left == 0:
            state.timing.finished_after_seconds = time.perf_counter() - started
            if any(answer is None for answer in state.predictions):
                raise RuntimeError(f"{state.benchmark.key}: some batches returned no answers")
            on_done(state.benchmark, [str(a) for a in state.predictions], state.timing)
    unfinished = [key for key, state in pending.items() if state.batches_left]
    if unfinished:
        raise RuntimeError(f"generation ended with benchmarks unfinished: {unfinished}")
    wall = time.perf_counter() - started
    return {
        "rows": total_rows,
        "batches": len(jobs),
        "wall_seconds": round(wall, 3),
        "prompts_per_s": round(total_rows / wall, 3) if wall else 0.0,
    }
