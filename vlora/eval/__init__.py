"""Benchmark loading, prompting and scoring, faithful to VLMEvalKit, with no network judge.

Main entry points:

* :func:`vlora.eval.scoring.score_benchmark` — ``(key, data_path, predictions) -> dict``;
* :func:`vlora.eval.tsv.read_benchmark_tsv` and :func:`vlora.eval.prompts.build_prompt` — rows and
  the prompt + images a LLaVA-style model sees;
* :func:`vlora.eval.benchmarks.get_benchmark` — the registry of benchmark keys;
* :mod:`vlora.eval.cli` — the ``score`` sub-command;
* :mod:`vlora.eval.adapters` — model classes for VLMEvalKit and lmms-eval;
* :mod:`vlora.eval.generate_fn` — greedy batched generation from a saved checkpoint
  (``make_generate_fn``, the adapters' factory); imported on demand (it needs torch);
* :mod:`vlora.eval.local_benchmarks` — the EasyVQA_TEST / EasyVQA_YORN files from easy-vqa.

The semantics (and where they come from upstream) are in docs/benchmark-scoring.md.
"""

from vlora.eval.benchmarks import BENCHMARKS, BenchmarkSpec, benchmark_keys, get_benchmark
from vlora.eval.errors import BenchmarkDataError, PredictionsError, UnknownBenchmarkError
from vlora.eval.predictions import load_predictions_jsonl
from vlora.eval.prompts import BenchmarkPrompt, build_prompt
from vlora.eval.scoring import ScoringOptions, score_benchmark
from vlora.eval.tsv import BenchmarkTable, TsvRecord, read_benchmark_tsv

__all__ = [
    "BENCHMARKS",
    "BenchmarkDataError",
    "BenchmarkPrompt",
    "BenchmarkSpec",
    "BenchmarkTable",
    "PredictionsError",
    "ScoringOptions",
    "TsvRecord",
    "UnknownBenchmarkError",
    "benchmark_keys",
    "build_prompt",
    "get_benchmark",
    "load_predictions_jsonl",
    "read_benchmark_tsv",
    "score_benchmark",
]
