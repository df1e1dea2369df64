"""Ray Data datasets for the training stages, built from the features stage's artifacts.

Rows (the contract of `vlora.data.collate.collate_batch`):
    input_ids  list<int32>   BOS, IMAGE_TOKEN_INDEX (-200) where the image goes, text tokens
    labels     list<int32>   IGNORE_INDEX (-100) except answers / captions and their end token
    features   fixed_size_list<float16>[L·d_v]   row-major [L, d_v]; zeros for text-only rows
    has_image  bool
    length     int32         len(input_ids), for length-aware batching

Tokenizer, template and image token come from the run's preset (`model.llm.tokenizer or
model.llm.source`, `model.template`); `max_length` from the training config, else the preset's
recipe. It counts text tokens (placeholder included): the input-space baseline's sequences are
L - 1 tokens longer, VLoRA's one shorter, and both train on the same supervised tokens.

Pre-training (`pretrain_dataset`): `read_parquet` over `artifacts["pretrain_features"]`
streams rows into a `map_batches` that tokenises the captions (plain template) and keeps the
features column as is; nothing is materialised. A light pass over the key and caption columns
only (no features) counts, by key, the captions that are not trained on (empty, round-trip
mismatch) and those truncated; the same function decides in both passes.

SFT (`sft_dataset`), the join of ~665K records with ~620K images of 1.2 MB features each,
without ever holding the features in the driver:
1. the driver parses the records (`artifacts["sft_json"]`) and reads only the `key` column and
   footers of the feature files (`artifacts["sft_features"]`): an index key → (file, row) of
   ~140 bytes per image. Structure problems and missing images are counted here;
2. records become Arrow blocks of `block_rows`, image records sorted by (file, row) and
   text-only records scattered at seeded random positions; Ray tasks tokenise them
   (tokenisation problems, truncation) and the result is materialised: token ids only, 8 bytes
   per token (~2 kB for a 250-token record). The driver collects the problem columns, merges
   the report and fails above `max_bad_fraction` (DataQualityError listing ids by reason);
3. the block order is randomised (seeded), and a lazy `map_batches` attaches each block's
   features: rows sorted by (file, row) need about one Parquet row-group read (64 rows) per 64
   rows, so features are read once per epoch, streamed, and never shuffled across the cluster.
   A hash join (`Dataset.join`) would shuffle every feature byte; a per-row random read would
   read a whole row group per image.
   Within a block, images are neighbours in the feature files; the trainer's local shuffle
   buffer and the random block order mix blocks (smaller `block_rows` = more mixing).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, BinaryIO

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.core import fs
from pipelines.core.ray_cluster import ensure_ray
from pipelines.core.stage import StageResult
from vlora.data.feature_index import FeatureIndex, check_feature_file, read_rows
from vlora.data.pretrain import prepare_caption
from vlora.data.report import DataReport
from vlora.data.sft import (
    DEFAULT_MAX_BAD_FRACTION,
    LLAVA_IMAGE_TOKEN,
    ParsedRecord,
    RecordProblem,
    parse_records,
    parse_records_text,
    tokenize_record,
)
from vlora.data.templates import Turn, get_template

if TYPE_CHECKING:
    import ray.data

    from pipelines.config import PipelineConfig

ROW_COLUMNS = ("input_ids", "labels", "features", "has_image", "length")
TOKEN_LIST = pa.list_(pa.int32())


@dataclass(frozen=True)
class DataSettings:
    tokenizer: str
    revision: str | None
    template: str
    image_token: str
    max_length: int
    feature_shape: tuple[int, int]  # (L, d_v) the model expects


def data_settings(config: PipelineConfig, max_length: int | None = None) -> DataSettings:
    from vlora.presets import get_preset

    model = config.resolved_model
    return DataSettings(
        tokenizer=model.llm.tokenizer or model.llm.source,
        revision=model.llm.revision,
        template=model.template,
        image_token=model.image_token,
        max_length=max_length or get_preset(config.preset).recipe.max_length,
        feature_shape=(model.vision.num_patches, model.vision.feature_dim),
    )


@lru_cache(maxsize=4)
def _tokenizer(source: str, revision: str | None):  # one load per worker process
    from vlora.tokenizer import load_tokenizer

    return load_tokenizer(source, revision)


def open_url(url: str) -> BinaryIO:
    return fsspec.open(url, "rb").open()


def artifact(features: StageResult, name: str) -> str:
    if name not in features.artifacts:
        raise FileNotFoundError(
            f"the features stage result has no '{name}' artifact "
            f"(has: {', '.join(sorted(features.artifacts)) or 'none'})"
        )
    return features.artifacts[name]


def feature_files(folder: str) -> list[str]:
    filesystem, path = fs.filesystem(folder)
    found = sorted(filesystem.glob(f"{path.rstrip('/')}/*.parquet"))
    protocol = (
        filesystem.protocol if isinstance(filesystem.protocol, str) else filesystem.protocol[0]
    )
    if protocol in ("file", "local"):
        return found
    return [f"{protocol}://{p}" for p in found]


def _ray_read_args(files: list[str]) -> dict[str, Any]:
    """Paths (and a pyarrow filesystem for non-local fsspec URLs) for ray.data.read_parquet."""
    if all(fs.is_local(f) for f in files):
        return {"paths": files}
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    filesystem, _ = fs.filesystem(files[0])
    return {
        "paths": [fs.filesystem(f)[1] for f in files],
        "filesystem": PyFileSystem(FSSpecHandler(filesystem)),
    }


def _check_files(files: list[str], settings: DataSettings, encoder: Any) -> None:
    def check(path: str) -> None:
        with open_url(path) as handle:
            check_feature_file(pq.ParquetFile(handle), path, encoder, settings.feature_shape)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(check, files))  # footers only; raises on the first bad file


def _flat_features(values: np.ndarray, width: int) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float16).reshape(-1), type=pa.float16())
    return pa.FixedSizeListArray.from_arrays(flat, width)


# ----- pre-training ----------------------------------------------------------------------------
def _caption_report(batch: pa.Table, settings: DataSettings) -> pa.Table:
    tokenizer = _tokenizer(settings.tokenizer, settings.revision)
    report = DataReport()
    for key, caption in zip(
        batch.column("key").to_pylist(), batch.column("caption").to_pylist(), strict=True
    ):
        prepare_caption(tokenizer, key, caption, settings.max_length, report, settings.image_token)
    return pa.table({"report": [_json(report.to_dict())]})


def _pretrain_rows(batch: pa.Table, settings: DataSettings) -> pa.Table:
    tokenizer = _tokenizer(settings.tokenizer, settings.revision)
    scratch = DataReport()  # counted by the report pass with the same function
    keep, ids, labels = [], [], []
    for i, (key, caption) in enumerate(
        zip(batch.column("key").to_pylist(), batch.column("caption").to_pylist(), strict=True)
    ):
        encoded = prepare_caption(
            tokenizer, key, caption, settings.max_length, scratch, settings.image_token
        )
        if encoded is not None:
            keep.append(i)
            ids.append(encoded.input_ids)
            labels.append(encoded.labels)
    features = batch.column("features").take(pa.array(keep, type=pa.int64())).combine_chunks()
    return pa.table(
        {
            "input_ids": pa.array(ids, type=TOKEN_LIST),
            "labels": pa.array(labels, type=TOKEN_LIST),
            "features": features,
            "has_image": pa.array([True] * len(keep), type=pa.bool_()),
            "length": pa.array([len(x) for x in ids], type=pa.int32()),
        }
    )


def pretrain_dataset_with_report(
    config: PipelineConfig,
    features: StageResult,
    max_length: int | None = None,
    max_bad_fraction: float | None = None,
) -> tuple[ray.data.Dataset, dict[str, Any]]:
    """The streaming pre-training dataset and the caption report (counts, keys by reason)."""
    import ray.data

    settings = data_settings(config, max_length)
    files = feature_files(artifact(features, "pretrain_features"))
    if not files:
        raise FileNotFoundError(
            f"no feature Parquet files in {features.artifacts['pretrain_features']}"
        )
    _check_files(files, settings, config.resolved_model.vision)
    ensure_ray(config.ray)
    read_args = _ray_read_args(files)
    captions = ray.data.read_parquet(**read_args, columns=["key", "caption"])
    parts = captions.map_batches(
        _caption_report, batch_format="pyarrow", fn_kwargs={"settings": settings}
    ).take_all()
    report = DataReport.merged(DataReport.from_dict(_unjson(p["report"])) for p in parts)
    _print_report("pre-training data", report)
    if max_bad_fraction is not None:
        report.check(max_bad_fraction, "pre-training data")
    elif report.total and report.num_ok == 0:
        report.check(1.0, "pre-training data")
    rows = ray.data.read_parquet(**read_args, columns=["key", "caption", "features"]).map_batches(
        _pretrain_rows, batch_format="pyarrow", fn_kwargs={"settings": settings}
    )
    summary = report.to_dict(max_ids=1000, max_note_ids=100)
    summary.update(files=len(files), max_length=settings.max_length, template="plain")
    return rows, summary


def pretrain_dataset(
    config: PipelineConfig, features: StageResult, max_length: int | None = None
) -> ray.data.Dataset:
    """Rows for pre-training (see the module docstring); the caption report is printed."""
    return pretrain_dataset_with_report(config, features, max_length)[0]


# ----- SFT -------------------------------------------------------------------------------------
def _records_table(parsed: list[ParsedRecord], index: FeatureIndex, seed: int) -> pa.Table:
    """Image records sorted by (file, row), text-only ones at seeded random places."""
    locations = [index.locate(r.image) if r.image is not None else (-1, -1) for r in parsed]
    image_rows = [i for i, r in enumerate(parsed) if r.image is not None]
    order_key = np.random.default_rng(seed).random(len(parsed))
    by_location = sorted(image_rows, key=lambda i: locations[i])
    for rank, i in enumerate(by_location):
        order_key[i] = rank / max(1, len(by_location))
    order = np.argsort(order_key, kind="stable")
    return pa.table(
        {
            "id": pa.array([parsed[i].id for i in order], type=pa.string()),
            "texts": pa.array([[t.text for t in parsed[i].turns] for i in order]),
            "image": pa.array([parsed[i].image for i in order], type=pa.string()),
            "file": pa.array([locations[i][0] for i in order], type=pa.int32()),
            "row": pa.array([locations[i][1] for i in order], type=pa.int64()),
        }
    )


def _tokenize_sft(batch: pa.Table, settings: DataSettings) -> pa.Table:
    tokenizer = _tokenizer(settings.tokenizer, settings.revision)
    template = get_template(settings.template)
    out: dict[str, list[Any]] = {
        k: [] for k in ("input_ids", "labels", "problem", "detail", "notes", "length")
    }
    for rid, texts, image in zip(
        batch.column("id").to_pylist(),
        batch.column("texts").to_pylist(),
        batch.column("image").to_pylist(),
        strict=True,
    ):
        turns = [Turn("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(texts)]
        record = ParsedRecord(rid, turns, image)
        result, _ = tokenize_record(
            record, tokenizer, template, settings.max_length, LLAVA_IMAGE_TOKEN
        )
        bad = isinstance(result, RecordProblem)
        out["input_ids"].append([] if bad else result.input_ids)
        out["labels"].append([] if bad else result.labels)
        out["problem"].append(result.reason if bad else "")
        out["detail"].append(result.detail if bad else "")
        out["notes"].append([] if bad else result.notes)
        out["length"].append(0 if bad else len(result.input_ids))
    return pa.table(
        {
            "id": batch.column("id"),
            "input_ids": pa.array(out["input_ids"], type=TOKEN_LIST),
            "labels": pa.array(out["labels"], type=TOKEN_LIST),
            "has_image": pc.is_valid(batch.column("image")),
            "length": pa.array(out["length"], type=pa.int32()),
            "file": batch.column("file"),
            "row": batch.column("row"),
            "problem": pa.array(out["problem"], type=pa.string()),
            "detail": pa.array(out["detail"], type=pa.string()),
            "notes": pa.array(out["notes"], type=pa.list_(pa.string())),
        }
    )


def _attach_features(batch: pa.Table, files: list[str], feature_shape: tuple[int, int]) -> pa.Table:
    batch = batch.filter(pc.equal(batch.column("problem"), ""))
    width = feature_shape[0] * feature_shape[1]
    values = np.zeros((len(batch), width), dtype=np.float16)  # text-only rows stay zeros
    file_column = batch.column("file").to_numpy()
    row_column = batch.column("row").to_numpy()
    for file_index in np.unique(file_column[file_column >= 0]):
        positions = np.flatnonzero(file_column == file_index)
        with open_url(files[int(file_index)]) as handle:
            values[positions] = read_rows(pq.ParquetFile(handle), row_column[positions].tolist())
    return pa.table(
        {
            "input_ids": batch.column("input_ids"),
            "labels": batch.column("labels"),
            "features": _flat_features(values, width),
            "has_image": batch.column("has_image"),
            "length": batch.column("length"),
        }
    )


def sft_dataset(
    config: PipelineConfig,
    features: StageResult,
    max_length: int | None = None,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    seed: int = 0,
    block_rows: int = 128,
    images_only: bool = False,
) -> tuple[ray.data.Dataset, dict[str, Any]]:
    """The SFT dataset (lazy, features streamed) and its report: counts by reason, record ids.

    Raises `vlora.data.report.DataQualityError` (listing record ids by reason) when more than
    `max_bad_fraction` of the records cannot be trained on. `images_only` leaves text-only
    records out, counted in the report (with the LLM frozen nothing trainable would see them).
    """
    import ray.data

    settings = data_settings(config, max_length)
    model = config.resolved_model
    json_url = artifact(features, "sft_json")
    with open_url(json_url) as handle:
        raw = parse_records_text(handle.read().decode("utf-8"), json_url)
    if not raw:
        raise ValueError(f"{json_url}: no SFT records")
    files = feature_files(artifact(features, "sft_features"))
    index = FeatureIndex(files, open_url, model.vision, settings.feature_shape)
    parsed, report = parse_records(raw, index.__contains__, LLAVA_IMAGE_TOKEN)
    del raw
    text_only_left_out = 0
    if images_only:
        text_only_left_out = sum(r.image is None for r in parsed)
        parsed = [r for r in parsed if r.image is not None]
        print(
            f"[SFT data] {text_only_left_out} text-only records left out: only the bridge "
            "trains (sft.train_llm=false)",
            flush=True,
        )
        if not parsed:
            raise ValueError(
                f"{json_url}: no SFT record has an image, and with sft.train_llm=false only "
                "the generator (or projector) trains, which learns from images"
            )
    if not parsed:
        report.check(max_bad_fraction, "SFT data")
    ensure_ray(config.ray)
    table = _records_table(parsed, index, seed)
    blocks = [table.slice(i, block_rows) for i in range(0, len(table), block_rows)]
    tokenized = (
        ray.data.from_arrow(blocks)
        .map_batches(
            _tokenize_sft, batch_format="pyarrow", batch_size=None, fn_kwargs={"settings": settings}
        )
        .materialize()
    )
    token_report = DataReport()
    for part in tokenized.select_columns(["id", "problem", "detail", "notes"]).iter_batches(
        batch_format="pyarrow", batch_size=None
    ):
        for rid, problem, detail, notes in zip(
            *(part.column(c).to_pylist() for c in part.column_names), strict=True
        ):
            if problem:
                token_report.add_problem(rid, problem, detail)
            for note in notes:
                token_report.add_note(rid, note)
    report.merge(token_report)
    _print_report("SFT data", report)
    report.check(max_bad_fraction, "SFT data")
    rows = tokenized.randomize_block_order(seed=seed).map_batches(
        _attach_features,
        batch_format="pyarrow",
        batch_size=None,
        fn_kwargs={"files": files, "feature_shape": settings.feature_shape},
    )
    summary = report.to_dict(max_note_ids=100)
    used = {r.image for r in parsed if r.image is not None}
    summary.update(
        template=settings.template,
        max_length=settings.max_length,
        max_bad_fraction=max_bad_fraction,
        feature_files=len(files),
        images_in_features=len(index),
        images_unused=len(index) - len(used),
        duplicate_feature_keys=len(index.duplicate_keys),
        text_only_left_out=text_only_left_out,
    )
    return rows, summary


# ----- helpers ---------------------------------------------------------------------------------
def _json(obj: Any) -> str:
    return json.dumps(obj)


def _unjson(text: str) -> Any:
    return json.loads(text)


def _print_report(what: str, report: DataReport) -> None:
    print(f"[{what}] {report.describe()}", flush=True)
