"""Stage `eval`: a VLoRA or baseline checkpoint on the paper's benchmarks and local ones.

Runs the exported sft model (``artifacts["model"]`` of the sft stage), or the checkpoint given in
``eval.checkpoint``, over ``eval.benchmarks`` (VLMEvalKit TSVs: MMBench_DEV_EN, MME,
ScienceQA_TEST, HallusionBench, MMMU_DEV_VAL, CCBench, …, and the local EasyVQA_TEST /
EasyVQA_YORN built from easy-vqa's test split) with batched greedy generation on Ray Data actors
(GPU actors on a cluster, CPU here), and scores them with ``vlora.eval`` exactly as
``vlora score`` does. Details: ``pipelines/eval/`` and docs/evaluation.md.

Checkpoint: with ``eval.checkpoint`` unset the stage reads the finished sft result (``UPSTREAM``)
and its key includes sft's fingerprint. With ``eval.checkpoint`` set, the sft stage is neither
needed nor read: the key holds the checkpoint's location and digest instead
(``pipelines.eval.checkpoint``). ``UPSTREAM`` stays ``("sft",)`` for the chain;
``upstream_stages(config)`` says what this config really reads (``()`` with an explicit
checkpoint), for callers that locate the stage's folder (``pipelines.core.chain.stage_dir`` must use
it to find such a result; see docs/evaluation.md).

Resume: per benchmark. ``scores/<KEY>.json`` (written after ``predictions/<KEY>.jsonl``) marks a
benchmark done; a rerun of a killed stage generates only the unfinished benchmarks.

Artifacts: ``report`` (report.md: our scores beside the paper's Table 1 rows), ``scores``
(scores.json: every benchmark's full score record), ``predictions`` (folder of
``<KEY>.jsonl``), ``scores_dir`` (folder of ``<KEY>.json``), ``model`` (the checkpoint that was
evaluated, for the register stage).
Metrics: ``<KEY>/<metric>`` for every numeric top-level score (``EasyVQA_TEST/Overall``,
``MME/perception``, ``<KEY>/unresolved``, …) and generation rates.
Summary: benchmarks generated / reused / re-scored, and per benchmark: rows evaluated, rows left
out by the limit, rows dropped without an image, extra images dropped by the one-image policy,
unresolved answers, images the local builders skipped by reason.
"""

from __future__ import annotations

from typing import Any

from pipelines.config import PipelineConfig
from pipelines.core.chain import upstream_results
from pipelines.core.stage import StageResult, run_stage

STAGE = "eval"
UPSTREAM = ("sft",)

# Config fields that cannot change the predictions: worker counts and placement.
_KEY_EXCLUDE = {"num_actors", "cpus_per_actor", "gpus_per_actor", "torch_threads", "checkpoint"}


def upstream_stages(config: PipelineConfig) -> tuple[str, ...]:
    """The stages this config reads: none when ``eval.checkpoint`` is given."""
    return () if config.eval.checkpoint else UPSTREAM


def key_config(config: PipelineConfig) -> dict[str, Any]:
    from pipelines.eval.checkpoint import checkpoint_identity
    from pipelines.eval.prepare import data_identity

    eval_config = config.eval
    settings = eval_config.model_dump(mode="json", exclude=_KEY_EXCLUDE | {"benchmarks"})
    return {
        "eval": settings,
        "device": "gpu" if eval_config.gpus_per_actor > 0 else "cpu",
        "benchmarks": [
            {**entry.model_dump(mode="json", exclude={"data"}), "data": data_identity(entry)}
            for entry in eval_config.benchmarks
        ],
        "checkpoint": checkpoint_identity(eval_config.checkpoint)
        if eval_config.checkpoint
        else "upstream:sft",
    }


def _preflight(config: PipelineConfig) -> None:
    """Checks that need no model: checkpoint folder and benchmark paths exist."""
    from pipelines.eval.checkpoint import checkpoint_manifest
    from pipelines.eval.prepare import check_entry_paths

    check_entry_paths(config.eval)
    if config.eval.checkpoint:
        checkpoint_manifest(config.eval.checkpoint, "eval.checkpoint")


def run(config: PipelineConfig, force: bool = False) -> StageResult:
    from pipelines.eval.checkpoint import checkpoint_manifest
    from pipelines.eval.runner import evaluate

    _preflight(config)
    upstream = upstream_results(config, STAGE)  # () with an explicit checkpoint
    if config.eval.checkpoint:
        checkpoint, field = config.eval.checkpoint, "eval.checkpoint"
    else:
        checkpoint, field = upstream["sft"].artifacts["model"], "sft artifacts['model']"
    manifest = checkpoint_manifest(checkpoint, field)
    template = manifest["model"].get("template")
    header = {
        "name": config.name,
        "checkpoint": f"`{checkpoint}` ({manifest['kind']}, template {template})",
        "prompts": f"content {config.eval.prompt_content}, wrapping {config.eval.prompt_wrapping}",
        "generation": "greedy, batch "
        f"{config.eval.batch_size}, max_new_tokens {config.eval.max_new_tokens.model_dump()}",
        "scoring": f"exact matching (no judge), {config.eval.scoring.model_dump()}",
    }
    if config.eval.prompt_wrapping != "model" and template != "vicuna_v1":
        header["warning"] = (
            f"the {config.eval.prompt_wrapping} wrapping is a vicuna_v1 string but this model "
            f"was trained with {template}"
        )

    def body(output_dir: str) -> dict[str, Any]:
        return evaluate(config.eval, checkpoint, output_dir, ray_config=config.ray, header=header)

    return run_stage(STAGE, config.workdir, key_config(config), body, upstream, force=force)
