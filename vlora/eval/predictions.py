"""Prediction files: JSONL lines ``{"index": <int or str>, "prediction": "<text>"}``.

Indices are normalised like TSV indices (``7`` and ``"7"`` name the same row; HallusionBench uses
string indices). Every malformed line raises :class:`PredictionsError` with its line number.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from vlora.eval.errors import PredictionsError
from vlora.eval.tsv import canonical_index


def normalise_predictions(predictions: Mapping[object, object]) -> dict[str, str]:
    """``{canonical index: prediction text}``; rejects non-text predictions and index clashes."""
    result: dict[str, str] = {}
    for key, value in predictions.items():
        if isinstance(key, bool) or not isinstance(key, int | str):
            raise PredictionsError(f"prediction index must be an int or str, got {key!r}")
        if not isinstance(value, str):
            raise PredictionsError(f"prediction for index {key!r} must be a string, got {value!r}")
        index = canonical_index(key)
        if index in result:
            raise PredictionsError(f"two predictions map to index {index} (e.g. 7 and '07')")
        result[index] = value
    return result


def load_predictions_jsonl(path: str | Path) -> dict[str, str]:
    """Read a predictions JSONL file; blank lines are skipped."""
    path = Path(path)
    predictions: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise PredictionsError(f"{path}: cannot open predictions file ({exc})") from exc
    with handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PredictionsError(f"{where}: not valid JSON ({exc.msg})") from exc
            if not isinstance(record, dict):
                raise PredictionsError(
                    f"{where}: expected a JSON object, got {type(record).__name__}"
                )
            absent = [key for key in ("index", "prediction") if key not in record]
            if absent:
                raise PredictionsError(f"{where}: missing key(s) {absent}")
            index, prediction = record["index"], record["prediction"]
            if isinstance(index, bool) or not isinstance(index, int | str):
                raise PredictionsError(
                    f"{where}: 'index' must be an integer or string, got {index!r}"
                )
            if not isinstance(prediction, str):
                raise PredictionsError(
                    f"{where}: 'prediction' must be a string, got {prediction!r}"
                )
            key = canonical_index(index)
            if key in first_seen:
                raise PredictionsError(
                    f"{where}: duplicate index {key} (first on line {first_seen[key]})"
                )
            first_seen[key] = line_number
            predictions[key] = prediction
    return predictions
