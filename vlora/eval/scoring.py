"""One entry point to score a benchmark file against predictions: :func:`score_benchmark`.

Results are on the percent scale (MME: points, max 2000 perception / 800 cognition):

* ``MMBench_DEV_EN``, ``CCBench``, ``ScienceQA_TEST``/``_VAL``, ``MMMU_DEV_VAL``, ``EasyVQA_TEST``:
  ``{"Overall": …}``;
* ``MME``, ``EasyVQA_YORN``: ``{"perception": …, "cognition": …}``;
* ``HallusionBench``: ``{"aAcc": …, "fAcc": …, "qAcc": …, "Overall": mean of the three}``;

plus extra keys: per-``category`` / ``l2-category`` / ``split`` breakdowns, ``unresolved`` (answers
the extractor could not read, counted wrong), ``missing_predictions``, ``n_questions``, and
provenance (``benchmark``, ``data_md5``, ``data_version``: ``vlora-era`` / ``current`` / ``unknown``
against the known VLMEvalKit TSV md5s, since scores move with the file version).

Defaults reproduce VLMEvalKit's exact-matching evaluation as of May 2024 (no judge).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from vlora.eval.benchmarks import BenchmarkSpec, get_benchmark
from vlora.eval.extraction import MatcherRules
from vlora.eval.judge import AnswerJudge
from vlora.eval.metrics_mcq import mmmu_choices, mmmu_truth, score_mcq
from vlora.eval.metrics_vqa import score_exact_match
from vlora.eval.metrics_yorn import YesNoParser, score_hallusion, score_mme
from vlora.eval.mmmu_official import DEFAULT_SEED, score_mmmu_official
from vlora.eval.predictions import normalise_predictions
from vlora.eval.tsv import BenchmarkTable, NaMode, read_benchmark_tsv


class ScoringOptions(BaseModel):
    """Knobs of :func:`score_benchmark`; the defaults are the VLoRA-era VLMEvalKit behaviour.

    Attributes:
        matcher: MCQ ``can_infer`` rules, ``"2024"`` or ``"head"`` (later VLMEvalKit).
        circular: force CircularEval on/off for MCQ benchmarks; None = the benchmark's default.
            Vanilla on a circular benchmark scores its main (circ0) rows only.
        mmmu_parser: ``"vlmevalkit"`` (open → 2-way MCQ) or ``"official"`` (MMMU/lmms-eval parser).
        seed: RNG seed of the official MMMU parser's random fallback.
        yes_no_parser: ``"vlmevalkit"`` (``YOrN_Extraction``) or ``"lmms-eval"`` (``parse_pred_ans``).
        na_mode: TSV missing-value convention (see ``vlora.eval.tsv``).
        validate_images: check every image payload while loading.
        allow_missing: score rows without a prediction as unanswered instead of failing.
        judge: optional :class:`~vlora.eval.judge.AnswerJudge`; None (default) = exact matching.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    matcher: MatcherRules = "2024"
    circular: bool | None = None
    mmmu_parser: Literal["vlmevalkit", "official"] = "vlmevalkit"
    seed: int = DEFAULT_SEED
    yes_no_parser: YesNoParser = "vlmevalkit"
    na_mode: NaMode = "pandas"
    validate_images: bool = True
    allow_missing: bool = False
    judge: Any = None

    @field_validator("judge")
    @classmethod
    def _judge_has_protocol(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, AnswerJudge):
            raise ValueError("judge must implement choose_option(...) and yes_no(...)")
        return value


# Known TSV md5s: provenance only, a mismatch is reported, never an error (local files differ).
def _data_provenance(path: Path, spec: BenchmarkSpec) -> dict[str, str]:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    md5 = digest.hexdigest()
    if md5 == spec.md5_vlora_era:
        version = "vlora-era"
    elif md5 == spec.md5_current:
        version = "current"
    else:
        version = "unknown"
    return {"data_md5": md5, "data_version": version}


def score_table(
    spec: BenchmarkSpec,
    table: BenchmarkTable,
    predictions: Mapping[str, str],
    options: ScoringOptions,
) -> dict[str, Any]:
    """Score an already loaded table (predictions keyed by canonical index)."""
    rows = table.rows
    common = {"judge": options.judge, "allow_missing": options.allow_missing}
    if spec.scorer == "mcq":
        circular = spec.circular if options.circular is None else options.circular
        return score_mcq(
            rows,
            predictions,
            circular=circular,
            rules=options.matcher,
            report_split=spec.report_split,
            vanilla_main_rows_only=spec.circular and not circular,
            **common,
        )
    if spec.scorer == "mmmu":
        if options.mmmu_parser == "official":
            return score_mmmu_official(
                rows,
                predictions,
                seed=options.seed,
                report_split=spec.report_split,
                allow_missing=options.allow_missing,
            )
        return score_mcq(
            rows,
            predictions,
            circular=False,
            rules=options.matcher,
            report_split=spec.report_split,
            choices_fn=mmmu_choices,
            truth_fn=mmmu_truth,
            **common,
        )
    if spec.scorer == "mme":
        return score_mme(
            rows,
            predictions,
            strict_categories=spec.strict_mme_categories,
            parser=options.yes_no_parser,
            **common,
        )
    if spec.scorer == "hallusion":
        return score_hallusion(rows, predictions, parser=options.yes_no_parser, **common)
    if spec.scorer == "exact_match":
        return score_exact_match(rows, predictions, allow_missing=options.allow_missing)
    raise AssertionError(f"unhandled scorer {spec.scorer!r}")


def score_benchmark(
    key: str,
    data_path: str | Path,
    predictions: Mapping[Any, str],
    *,
    options: ScoringOptions | None = None,
) -> dict[str, Any]:
    """Score ``predictions`` (index → prediction text) on the benchmark file ``data_path``.

    Raises:
        UnknownBenchmarkError: ``key`` is not registered (the message lists valid keys).
        BenchmarkDataError: the TSV is malformed (message names the row).
        PredictionsError: predictions are malformed or (unless allowed) missing for scored rows.
    """
    spec = get_benchmark(key)
    options = options or ScoringOptions()
    table = read_benchmark_tsv(
        data_path,
        required_columns=spec.required_columns,
        na_mode=options.na_mode,
        validate_images=options.validate_images,
    )
    normalised = normalise_predictions(predictions)
    result = score_table(spec, table, normalised, options)
    known = {row.index for row in table.rows}
    return {
        **result,
        "benchmark": spec.key,
        "rows_in_file": len(table.rows),
        "rows_dropped_without_image": len(table.dropped_without_image),
        "predictions_not_in_file": sum(index not in known for index in normalised),
        **_data_provenance(table.path, spec),
    }
