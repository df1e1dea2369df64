"""`python -m pipelines <stage|all> --config NAME_OR_YAML [--set a.b=v ...] [--force]`.

Runs stages without Prefect: the same functions the flows call. `python -m pipelines serve
--model MODEL …` serves a model instead (`pipelines/serve/cli.py`, `--help` there).
"""

from __future__ import annotations

import argparse
import json
import sys

from pipelines.core.signals import unwind_on_sigterm
from pipelines.core.verbosity import configure_console_logging, set_verbosity
from vlora.utils.env import apply_offline_defaults


def main(argv: list[str] | None = None) -> int:
    apply_offline_defaults()
    unwind_on_sigterm()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:  # `python -m pipelines serve --model …` (pipelines/serve/cli.py)
        from pipelines.serve.cli import main as serve_main

        return serve_main(argv[1:])
    from pipelines.config import load_pipeline_config
    from pipelines.stages import STAGE_ORDER, run_chain

    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__)
    parser.add_argument("stage", choices=[*STAGE_ORDER, "all"])
    parser.add_argument("--config", required=True, help="Named config (local, smoke, …) or YAML.")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="Override: section.field=value (repeatable).",
    )
    parser.add_argument("--force", action="store_true", help="Redo the stage from scratch.")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="Also print Ray's own INFO logs (execution plans, worker groups, per-report lines).",
    )
    args = parser.parse_args(argv)
    set_verbosity(args.verbose)
    configure_console_logging()
    try:
        config = load_pipeline_config(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stages = list(STAGE_ORDER) if args.stage == "all" else [args.stage]
    results = run_chain(config, stages, force=stages if args.force else None)
    for name, result in results.items():
        print(
            json.dumps(
                {
                    "stage": name,
                    "output_dir": result.output_dir,
                    "cached": result.cached,
                    "summary": result.summary,
                    "metrics": result.metrics,
                },
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
