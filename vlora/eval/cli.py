"""``score`` sub-command: score a predictions JSONL on a benchmark TSV, print one JSON object.

Wiring into a top-level CLI::

    subparsers = parser.add_subparsers(dest="command", required=True)
    add_score_subparser(subparsers)
    args = parser.parse_args()
    sys.exit(args.func(args))

Stand-alone: ``python -m vlora.eval.cli score --benchmark MME --data MME.tsv --predictions p.jsonl``.
Exit status 0 on success, 2 on bad input (the message goes to stderr; stdout stays empty).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from vlora.eval.benchmarks import benchmark_keys
from vlora.eval.errors import BenchmarkDataError, PredictionsError, UnknownBenchmarkError
from vlora.eval.predictions import load_predictions_jsonl
from vlora.eval.scoring import ScoringOptions, score_benchmark

EXIT_BAD_INPUT = 2
DESCRIPTION = "Score a predictions JSONL on a benchmark TSV; print one JSON object on stdout."


def _configure_score_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--benchmark",
        required=True,
        metavar="KEY",
        help=f"benchmark key, one of: {', '.join(benchmark_keys())}",
    )
    parser.add_argument("--data", required=True, metavar="FILE.tsv", help="VLMEvalKit-format TSV")
    parser.add_argument(
        "--predictions",
        required=True,
        metavar="FILE.jsonl",
        help='lines {"index": <int>, "prediction": "<text>"}',
    )
    parser.add_argument(
        "--matcher", choices=["2024", "head"], default="2024", help="MCQ answer-matching rules"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--circular", dest="circular", action="store_true", default=None, help="force CircularEval"
    )
    mode.add_argument(
        "--vanilla", dest="circular", action="store_false", help="vanilla MCQ accuracy (circ0 rows)"
    )
    parser.add_argument("--mmmu-parser", choices=["vlmevalkit", "official"], default="vlmevalkit")
    parser.add_argument("--seed", type=int, default=0, help="seed of the official MMMU fallback")
    parser.add_argument(
        "--yes-no-parser", choices=["vlmevalkit", "lmms-eval"], default="vlmevalkit"
    )
    parser.add_argument(
        "--na-mode",
        choices=["pandas", "empty"],
        default="pandas",
        help="which TSV cells are missing: pandas NaN strings (VLMEvalKit) or empty cells only",
    )
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="score rows without a prediction as unanswered instead of failing",
    )
    parser.set_defaults(func=run_score)
    return parser


def add_score_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``score`` on an ``argparse`` sub-parser collection; returns the new parser."""
    parser = subparsers.add_parser(
        "score",
        help="score benchmark predictions (VLMEvalKit exact matching, no judge)",
        description=DESCRIPTION,
    )
    return _configure_score_parser(parser)


def run_score(args: argparse.Namespace) -> int:
    """Execute a parsed ``score`` command; prints the result JSON on stdout."""
    try:
        options = ScoringOptions(
            matcher=args.matcher,
            circular=args.circular,
            mmmu_parser=args.mmmu_parser,
            seed=args.seed,
            yes_no_parser=args.yes_no_parser,
            na_mode=args.na_mode,
            allow_missing=args.allow_missing,
        )
        predictions = load_predictions_jsonl(args.predictions)
        result = score_benchmark(args.benchmark, args.data, predictions, options=options)
    except (BenchmarkDataError, PredictionsError, UnknownBenchmarkError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # ASCII escapes keep stdout valid on terminals and pipes without a UTF-8 locale.
    print(json.dumps(result))
    return 0


def main_score(argv: Sequence[str] | None = None) -> int:
    """Parse ``score`` options (without the word ``score``) and run; returns the exit status."""
    parser = _configure_score_parser(
        argparse.ArgumentParser(prog="vlora score", description=DESCRIPTION)
    )
    return run_score(parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry with sub-commands (only ``score`` here)."""
    parser = argparse.ArgumentParser(prog="python -m vlora.eval.cli")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_score_subparser(subparsers)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
