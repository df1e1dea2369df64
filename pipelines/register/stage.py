"""Stage `register`: the evaluated checkpoint into the MLflow Model Registry.

Registers the model the eval stage evaluated (``artifacts["model"]``: the sft export, or
``eval.checkpoint``) as a new version of ``registry.model_name`` with:

- the checkpoint folder and a SHA-256 list of its files (the list's digest is a version tag;
  ``pipelines.register.load_registered_model`` verifies both when loading);
- the pipeline config and the data lineage: key, fingerprint and manifest digest of every upstream
  stage back to download, so a version names exactly the data and runs it came from;
- the eval metrics (run metrics and ``metric.*`` version tags) and the source commit.

The new version gets the alias ``registry.candidate_alias``; ``registry.production_alias`` moves
to it only when every ``registry.thresholds`` entry passes (none configured: never). The registry
is the tracking URI's (a local SQLite store by default, any MLflow server in production).

A rerun is a cached no-op; a run killed after the version was created finds that version by its
key tag and finishes without a duplicate.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from pipelines.config import PipelineConfig
from pipelines.core import fs
from pipelines.core.chain import finished_result, upstream_names, upstream_results
from pipelines.core.stage import StageResult, run_stage, source_commit, stage_key

STAGE = "register"
UPSTREAM = ("sft", "eval")


def upstream_stages(config: PipelineConfig) -> tuple[str, ...]:
    """sft and eval; eval alone when it evaluated an explicit ``eval.checkpoint``."""
    return ("eval",) if config.eval.checkpoint else UPSTREAM


def key_config(config: PipelineConfig) -> dict[str, Any]:
    return {
        "registry": config.registry.model_dump(mode="json"),
        "model_name": config.registered_model_name(),
        "tracking_uri": config.mlflow_uri(),
        "experiment": config.tracking.experiment,
    }


def lineage(config: PipelineConfig, stage: str = STAGE) -> dict[str, dict[str, str]]:
    """Every stage `stage` depends on, transitively: key, fingerprint, manifest digest, folder."""
    found: dict[str, dict[str, str]] = {}
    pending = list(upstream_names(config, stage))
    while pending:
        name = pending.pop()
        if name in found:
            continue
        result = finished_result(config, name)
        filesystem, path = fs.filesystem(result.manifest_path)
        found[name] = {
            "key": result.key,
            "fingerprint": result.fingerprint,
            "manifest_sha256": hashlib.sha256(filesystem.cat_file(path)).hexdigest(),
            "output_dir": result.output_dir,
        }
        pending.extend(upstream_names(config, name))
    return dict(sorted(found.items()))


def check_thresholds(
    thresholds: dict[str, float], metrics: dict[str, float]
) -> list[dict[str, Any]]:
    """One row per threshold; a metric the eval stage did not produce is a clear error."""
    unknown = sorted(set(thresholds) - set(metrics))
    if unknown:
        raise ValueError(
            f"registry.thresholds: eval produced no metric {unknown}; available: "
            f"{', '.join(sorted(metrics))}"
        )
    return [
        {"metric": name, "value": metrics[name], "min": minimum, "passed": metrics[name] >= minimum}
        for name, minimum in sorted(thresholds.items())
    ]


def _source_state() -> dict[str, str]:
    commit = source_commit() or "unknown"
    try:
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        changed = ""
    return {"vlora.source_commit": commit, "vlora.source_dirty": str(bool(changed)).lower()}


def _local_model_dir(model_url: str, scratch: str) -> str:
    """The checkpoint as a local folder (MLflow logs artifacts from local files)."""
    if fs.is_local(model_url):
        return fs.filesystem(model_url)[1]
    filesystem, path = fs.filesystem(model_url)
    target = str(Path(scratch) / "model")
    filesystem.get(path.rstrip("/") + "/", target, recursive=True)
    return target


def run(config: PipelineConfig, force: bool = False) -> StageResult:
    from pipelines.register import register_checkpoint, set_alias

    upstream = upstream_results(config, STAGE)
    evaluated = upstream["eval"]
    model_url = evaluated.artifacts["model"]
    checks = check_thresholds(config.registry.thresholds, evaluated.metrics)
    key = stage_key(STAGE, key_config(config), {n: r.fingerprint for n, r in upstream.items()})
    name = config.registered_model_name()

    def body(output_dir: str) -> dict[str, Any]:
        chain = lineage(config)
        tags = {
            "vlora.design": config.design,
            "vlora.preset": config.preset,
            "vlora.pipeline": config.name,
            **_source_state(),
            **{f"vlora.lineage.{stage}": info["fingerprint"] for stage, info in chain.items()},
            **{f"metric.{metric}": f"{value:.4g}" for metric, value in evaluated.metrics.items()},
        }
        with tempfile.TemporaryDirectory() as scratch:
            version = register_checkpoint(
                tracking_uri=config.mlflow_uri(),
                experiment=config.tracking.experiment,
                artifact_location=config.mlflow_artifact_location(),
                model_dir=_local_model_dir(model_url, scratch),
                model_name=name,
                register_key=key,
                run_name=f"{config.name}-register",
                tags=tags,
                metrics=evaluated.metrics,
                documents={"pipeline_config": config.model_dump(mode="json"), "lineage": chain},
                description=config.registry.description,
                alias=config.registry.candidate_alias,
            )
        promoted = bool(checks) and all(check["passed"] for check in checks)
        aliases = version.aliases
        if promoted:
            aliases = set_alias(
                config.mlflow_uri(), name, version.version, config.registry.production_alias
            )
        record = {
            "model_name": name,
            "version": version.version,
            "model_uri": version.uri,
            "aliases": aliases,
            "run_id": version.run_id,
            "source": version.source,
            "tracking_uri": config.mlflow_uri(),
            "reused_existing_version": version.reused,
            "promoted": promoted,
            "thresholds": checks,
            "lineage": chain,
        }
        record_path = fs.join(output_dir, "registration.json")
        fs.write_json_atomic(record_path, record)
        summary = {k: v for k, v in record.items() if k != "lineage"}
        return {
            "summary": summary,
            "artifacts": {"registration": record_path, "model": model_url},
        }

    result = run_stage(STAGE, config.workdir, key_config(config), body, upstream, force=force)
    if result.key != key:  # the version tag and the stage folder must name the same result
        raise RuntimeError(f"register key drifted: tagged {key}, stage folder {result.key}")
    return result
