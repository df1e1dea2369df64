"""The one-command local run: the whole chain with an embedded Prefect and local Ray.

    python -m flows local          # the local default (smollm2-dinov2 on easy-vqa), `make run`
    python -m flows smoke          # the same chain with tiny models (CI)

No server to start: Prefect runs the flow against a temporary local API, and Ray starts a
private cluster on 127.0.0.1; both stop when the process ends.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from flows.artifacts import resume_note
from pipelines.core import fs
from pipelines.core.machine import describe, snapshot
from pipelines.core.signals import unwind_on_sigterm
from pipelines.core.verbosity import configure_console_logging, set_verbosity
from vlora.offline.cache import vlora_cache_dir
from vlora.utils.env import apply_offline_defaults


def _prefect_defaults(workdir: str) -> None:
    # A project-local Prefect home keeps the user's own Prefect profile untouched; beside a
    # local workdir, or in the vlora cache for a remote one (an s3:// URL is not a folder here).
    home = Path(workdir).resolve().parent if fs.is_local(workdir) else vlora_cache_dir()
    os.environ.setdefault("PREFECT_HOME", str(home / ".prefect"))
    # Prefect's ephemeral API opens a SQLite file there and cannot create the folder itself
    # (a fresh clone has no runs/ yet).
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def print_report(results: dict[str, dict], seconds: float, machine: str | None = None) -> None:
    print("\n" + "=" * 78)
    print(f"vlora pipeline finished in {seconds / 60:.1f} min")
    if machine:  # stage times only compare between runs on equally fast machines
        print(machine)
    print()
    for name, result in results.items():
        status = "cached" if result["cached"] else f"{result['seconds']:.0f} s"
        note = resume_note(result)
        print(f"  {name:<9} {status:>8}  {result['output_dir']}" + (f"  ({note})" if note else ""))
    eval_result = results.get("eval")
    if eval_result and eval_result.get("metrics"):
        print("\nScores:")
        for key, value in sorted(eval_result["metrics"].items()):
            print(f"  {key:<40} {value:8.2f}")
        report = eval_result.get("artifacts", {}).get("report")
        if report:
            print(f"\nEval report: {report}")
    for name in ("pretrain", "sft"):
        curve = results.get(name, {}).get("artifacts", {}).get("loss_curve")
        if curve:
            print(f"{name} loss curve: {curve}")
    register = results.get("register")
    if register:
        summary = register.get("summary", {})
        print(
            f"\nRegistered: {summary.get('model_name')} version {summary.get('version')} "
            f"aliases {summary.get('aliases')}"
        )
    print("=" * 78)


def main(argv: list[str] | None = None) -> int:
    import argparse

    apply_offline_defaults()
    unwind_on_sigterm()
    parser = argparse.ArgumentParser(prog="python -m flows", description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", default="local", help="local, smoke or a YAML path")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--stages", nargs="*", default=None)
    parser.add_argument("--force", nargs="*", default=[])
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="Also print Ray's and Prefect's own INFO logs (execution plans, worker groups, "
        "per-report lines); by default only stage lines, summaries, training lines and the report.",
    )
    args = parser.parse_args(argv)
    set_verbosity(args.verbose)  # before Prefect and Ray are imported: they read it at import
    configure_console_logging()
    from pipelines.config import load_pipeline_config

    try:
        config = load_pipeline_config(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _prefect_defaults(config.workdir)
    from flows.vlora_flow import vlora

    machine_at_start = snapshot()
    started = time.perf_counter()
    results = vlora(
        config=args.config, overrides=args.overrides, stages=args.stages, force=args.force
    )
    seconds = time.perf_counter() - started
    print_report(results, seconds, describe(machine_at_start, snapshot()))
    return 0
