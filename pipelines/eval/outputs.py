"""Per-benchmark outputs of the eval stage, written atomically, and how a rerun finds them.

Layout inside the stage directory:

* ``predictions/<KEY>.jsonl``: one line per row, ``{"index": <int or str>, "prediction": "<text>"}``
  in the order of the scored TSV (what ``vlora score --predictions`` reads);
* ``scores/<KEY>.json``: ``{"benchmark", "data", "scores": <score_benchmark result>, "counts",
  "generation", "example_prompt"}``, written after the predictions: its presence marks the
  benchmark finished;
* ``data/<KEY>.tsv``: the scored TSV when it is not the configured file itself (built locally,
  fetched from a URL, or cut to the row limit).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from pipelines.core import fs
from vlora.eval.errors import PredictionsError
from vlora.eval.predictions import load_predictions_jsonl
from vlora.eval.tsv import canonical_index

logger = logging.getLogger(__name__)

PREDICTIONS_DIR = "predictions"
SCORES_DIR = "scores"
DATA_DIR = "data"


def predictions_url(output_dir: str, key: str) -> str:
    return fs.join(output_dir, PREDICTIONS_DIR, f"{key}.jsonl")


def scores_url(output_dir: str, key: str) -> str:
    return fs.join(output_dir, SCORES_DIR, f"{key}.json")


def json_index(index: str) -> int | str:
    """Integer indices as JSON numbers (the documented format), string indices as strings."""
    try:
        as_int = int(index)
    except ValueError:
        return index
    return as_int if canonical_index(as_int) == index else index


def predictions_text(indices: list[str], predictions: list[str]) -> str:
    lines = [
        json.dumps({"index": json_index(index), "prediction": text}, ensure_ascii=False)
        for index, text in zip(indices, predictions, strict=True)
    ]
    return "\n".join(lines) + "\n"


def write_predictions(output_dir: str, key: str, indices: list[str], predictions: list[str]) -> str:
    url = predictions_url(output_dir, key)
    fs.write_bytes_atomic(url, predictions_text(indices, predictions).encode("utf-8"))
    return url


def read_predictions(url: str) -> dict[str, str]:
    """A predictions file (local or remote) parsed by the library's own reader."""
    if fs.is_local(url):
        return load_predictions_jsonl(fs.filesystem(url)[1])
    filesystem, path = fs.filesystem(url)
    with tempfile.TemporaryDirectory(prefix="vlora-eval-") as tmp:
        local = Path(tmp) / "predictions.jsonl"
        filesystem.get(path, str(local))
        return load_predictions_jsonl(local)


def finished_predictions(output_dir: str, key: str, indices: list[str]) -> dict[str, str] | None:
    """The saved predictions of ``key`` when they cover exactly ``indices``; else None (logged)."""
    url = predictions_url(output_dir, key)
    if not fs.exists(url):
        return None
    try:
        predictions = read_predictions(url)
    except PredictionsError as err:
        logger.warning("[eval] %s: unreadable predictions, regenerating (%s)", key, err)
        return None
    if set(predictions) != set(indices):
        logger.warning("[eval] %s: saved predictions do not match the rows, regenerating", key)
        return None
    return predictions


def write_scores(output_dir: str, key: str, record: dict[str, Any]) -> str:
    url = scores_url(output_dir, key)
    fs.write_json_atomic(url, record)
    return url


def read_scores(output_dir: str, key: str) -> dict[str, Any] | None:
    url = scores_url(output_dir, key)
    return fs.read_json(url) if fs.exists(url) else None


def publish_data(output_dir: str, local_path: Path, key: str) -> str:
    """The scored TSV's location inside the stage output (uploaded when the output is remote)."""
    if fs.is_local(output_dir):
        return str(local_path)
    url = fs.join(output_dir, DATA_DIR, f"{key}.tsv")
    fs.write_bytes_atomic(url, local_path.read_bytes())
    return url
