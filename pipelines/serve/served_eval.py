"""Served = offline: the eval stage's questions through the server, scored by the eval stage's scorer.

    python -m pipelines.serve.served_eval --config local \\
        --model models:/vlora-local@production --tracking-uri sqlite:///runs/local/mlflow.db

prepares the config's benchmarks exactly as the eval stage does (`pipelines.eval.prepare`:
same TSV, same rows, same prompts), starts `python -m pipelines serve --model MODEL` (or uses
`--url` of a running server), asks every question with its image over the OpenAI API (greedy,
the stage's max_new_tokens), scores the answers with `vlora.eval.scoring.score_benchmark`, and
puts them beside the eval stage's finished result for the same config: scores, and how many
answers are identical. Served and offline answers are the same greedy decoding of the same
prompt tokens (`vlora.serving.chat` tokenises the user turn as `BatchGenerator` does), so the
scores should match; a difference is a bug (or float rounding flipping a near-tie: the
per-row agreement says how often).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from pipelines.config import PipelineConfig
from pipelines.eval.prepare import PreparedBenchmark, prepare_benchmark, prompt_input
from vlora.eval.prompts import IMAGE_PLACEHOLDER

logger = logging.getLogger(__name__)


def chat_messages(prompt: str, image: bytes | None) -> list[dict[str, Any]]:
    """The eval stage's user prompt ("<image>\\n{content}") as OpenAI content parts."""
    if image is None:
        return [{"role": "user", "content": prompt.replace(f"{IMAGE_PLACEHOLDER}\n", "")}]
    before, found, after = prompt.partition(IMAGE_PLACEHOLDER)
    if not found:
        before, after = "", prompt  # the stage puts the image first when the text has none
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    parts: list[dict[str, Any]] = []
    if before:
        parts.append({"type": "text", "text": before.removesuffix("\n")})
    parts.append({"type": "image_url", "image_url": {"url": url}})
    if after:
        parts.append({"type": "text", "text": after.removeprefix("\n")})
    return [{"role": "user", "content": parts}]


def served_answers(
    base_url: str,
    model: str,
    benchmark: PreparedBenchmark,
    api_key: str | None = None,
    concurrency: int = 8,
) -> list[str]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def ask(row: int) -> str:
        image_id = benchmark.image_ids[row]
        body = {
            "model": model,
            "messages": chat_messages(
                benchmark.prompts[row], benchmark.images[image_id] if image_id else None
            ),
            "temperature": 0,
            "max_tokens": benchmark.max_new_tokens,
        }
        response = httpx.post(
            f"{base_url}/v1/chat/completions", json=body, headers=headers, timeout=600
        )
        if response.status_code != 200:
            raise RuntimeError(
                f"row {benchmark.indices[row]}: {response.status_code} {response.text}"
            )
        # the eval stage strips answers (VLMEvalKit's convention); so does this client
        return response.json()["choices"][0]["message"]["content"].strip()

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(ask, range(len(benchmark.prompts))))


def score_served(
    config: PipelineConfig,
    base_url: str,
    model: str,
    work_dir: Path,
    keys: list[str] | None = None,
    api_key: str | None = None,
    concurrency: int = 8,
) -> dict[str, dict[str, Any]]:
    """{benchmark: {"scores", "predictions"}} for the config's benchmarks (or `keys`)."""
    from pipelines.eval.runner import scoring_options
    from vlora.eval.scoring import score_benchmark

    if prompt_input(config.eval) != "user":
        raise ValueError(
            f"eval.prompt_wrapping: '{config.eval.prompt_wrapping}' sends a whole conversation "
            "string; over the chat API the server applies the model's template: use 'model'"
        )
    out = {}
    for position, entry in enumerate(config.eval.benchmarks):
        if keys and entry.key not in keys:
            continue
        benchmark = prepare_benchmark(position, entry, config.eval, work_dir)
        answers = served_answers(base_url, model, benchmark, api_key, concurrency)
        predictions = dict(zip(benchmark.indices, answers, strict=True))
        scores = score_benchmark(
            benchmark.key, benchmark.data_path, predictions, options=scoring_options(config.eval)
        )
        out[benchmark.key] = {"scores": scores, "predictions": predictions}
    return out


def compare_with_eval_stage(
    config: PipelineConfig, served: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Beside each served benchmark: the eval stage's scores and per-row answer agreement."""
    from pipelines.core.chain import finished_result
    from pipelines.eval import outputs

    stage = finished_result(config, "eval")
    report = {}
    for key, record in served.items():
        offline_scores = outputs.read_scores(stage.output_dir, key) or {}
        offline = outputs.read_predictions(outputs.predictions_url(stage.output_dir, key))
        same = sum(offline.get(i) == a for i, a in record["predictions"].items())
        report[key] = {
            "served": _numbers(record["scores"]),
            "eval_stage": _numbers(offline_scores.get("scores", {})),
            "identical_answers": same,
            "rows": len(record["predictions"]),
            "eval_stage_dir": stage.output_dir,
        }
    return report


def _numbers(scores: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in scores.items() if isinstance(v, int | float)}


def main(argv: list[str] | None = None) -> int:
    from pipelines.config import load_pipeline_config
    from pipelines.serve.process import ServerProcess

    parser = argparse.ArgumentParser(
        prog="python -m pipelines.serve.served_eval", description=__doc__
    )
    parser.add_argument("--config", required=True, help="The pipeline config whose eval to match.")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--model",
        help="MODEL for `pipelines serve` (default: the config's registered production version).",
    )
    parser.add_argument("--tracking-uri", help="MLflow URI (default: the config's).")
    parser.add_argument("--url", help="A running server instead of starting one.")
    parser.add_argument("--served-model-name", help="With --url: the model id it serves.")
    parser.add_argument("--benchmarks", nargs="*", default=["EasyVQA_TEST"])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", help="Write the comparison as JSON here.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    config = load_pipeline_config(args.config, args.overrides)
    tracking = args.tracking_uri or config.mlflow_uri()
    model = args.model or f"models:/{config.registered_model_name()}@production"
    with tempfile.TemporaryDirectory(prefix="vlora-served-eval-") as scratch:
        if args.url:
            name = (
                args.served_model_name or httpx.get(f"{args.url}/v1/models").json()["data"][0]["id"]
            )
            served = score_served(
                config, args.url, name, Path(scratch), args.benchmarks, None, args.concurrency
            )
        else:
            serve_args = [
                "--model",
                model,
                "--tracking-uri",
                tracking,
                "--max-batch-size",
                str(args.concurrency),
            ]
            with ServerProcess(serve_args) as server:
                name = httpx.get(f"{server.base_url}/v1/models").json()["data"][0]["id"]
                served = score_served(
                    config,
                    server.base_url,
                    name,
                    Path(scratch),
                    args.benchmarks,
                    None,
                    args.concurrency,
                )
    report = compare_with_eval_stage(config, served)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    mismatch = [k for k, r in report.items() if r["served"] != r["eval_stage"]]
    if mismatch:
        print(f"served scores differ from the eval stage's on {mismatch}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
