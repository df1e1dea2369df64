"""Benchmarks → prompts, before any model is loaded.

For each configured benchmark: find its TSV (a local path, an fsspec URL fetched into the stage's
``data/`` folder, or a local EasyVQA_* file built from easy-vqa), read and validate it
(``vlora.eval.tsv.read_benchmark_tsv``), cut it to the row limit keeping whole scoring groups, and
build one prompt string per row (the one-image policy of ``vlora.eval.prompts``: the first image
of a multi-image row, the others counted as dropped). Every error names the config field
(``eval.benchmarks[2].data``) and, from the TSV reader, the row.

The file that is scored is the file the prompts came from: the source itself, or
``data/<KEY>.tsv`` when it was built, fetched or cut to the limit (VLMEvalKit format, image
back-references resolved where their target was cut), so ``vlora score --data`` on it reproduces
the stage's numbers.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.config.eval import BenchmarkEntry, EvalConfig
from pipelines.core import fs
from vlora.eval.benchmarks import BenchmarkSpec, get_benchmark
from vlora.eval.errors import BenchmarkDataError
from vlora.eval.local_benchmarks import BUILDER_VERSION, build_local_benchmark
from vlora.eval.prompts import lmms_eval_content, vlmevalkit_content, wrap_prompt
from vlora.eval.tsv import (
    IMAGE_REFERENCE_MAX_LEN,
    BenchmarkTable,
    TsvRecord,
    read_benchmark_tsv,
    write_benchmark_tsv,
)

logger = logging.getLogger(__name__)

# One image per prompt: VLoRA turns one image into one set of deltas (see vlora.eval.prompts).
MAX_IMAGES = 1


@dataclass
class PreparedBenchmark:
    """One benchmark ready for generation: rows, prompt strings and the images they need."""

    key: str
    spec: BenchmarkSpec
    field: str  # the config location, for messages: "eval.benchmarks[0]"
    data_path: Path  # the local TSV that is scored
    table: BenchmarkTable
    prompts: list[str]
    image_ids: list[str]  # per row: key into `images`, "" for a text-only prompt
    images: dict[str, bytes]  # encoded image bytes (PNG/JPEG as stored in the TSV)
    max_new_tokens: int
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def indices(self) -> list[str]:
        return [row.index for row in self.table.rows]


def entry_field(position: int) -> str:
    return f"eval.benchmarks[{position}]"


def check_entry_paths(eval_config: EvalConfig) -> None:
    """Fail fast, naming the field, when a benchmark's data path does not exist."""
    for position, entry in enumerate(eval_config.benchmarks):
        if entry.data is None:
            continue
        try:
            found = fs.exists(entry.data)
        except (OSError, ValueError, ImportError) as err:
            raise ValueError(
                f"{entry_field(position)}.data: cannot reach '{entry.data}' ({err})"
            ) from None
        if not found:
            raise ValueError(
                f"{entry_field(position)}.data: '{entry.data}' does not exist ({entry.key})"
            )


_MD5_CACHE: dict[tuple[str, int, int], str] = {}


def file_md5(path: Path) -> str:
    """md5 of a local file, memoised per (path, size, mtime) within the process."""
    stat = path.stat()
    cache_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if cache_key not in _MD5_CACHE:
        digest = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _MD5_CACHE[cache_key] = digest.hexdigest()
    return _MD5_CACHE[cache_key]


def data_identity(entry: BenchmarkEntry) -> dict[str, Any]:
    """What the stage key records about a benchmark's data (content, not location, when local)."""
    if entry.data is None:
        return {"builtin": "easy-vqa test", "images": entry.images, "builder": BUILDER_VERSION}
    if fs.is_local(entry.data):
        path = Path(fs.filesystem(entry.data)[1])
        return {"md5": file_md5(path)} if path.is_file() else {"path": entry.data}
    filesystem, path = fs.filesystem(entry.data)
    info = filesystem.info(path)
    version = {k: str(info[k]) for k in ("ETag", "etag", "mtime", "LastModified") if k in info}
    return {"url": entry.data, "size": info.get("size"), **version}


def fetch_remote(url: str, target: Path) -> Path:
    """Download the remote TSV ``url`` to ``target`` (through a temporary name)."""
    filesystem, path = fs.filesystem(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    filesystem.get(path, str(tmp))
    tmp.replace(target)
    return target


# ----- row limit keeping scoring groups --------------------------------------------------------
def group_key(spec: BenchmarkSpec, row: TsvRecord, circular: bool) -> Hashable:
    """Rows scored together: circular copies, the questions of an MME image, a Hallusion set."""
    if spec.scorer == "mcq" and (circular or spec.circular):
        return row.main_index
    if spec.scorer == "mme":
        return row.get("image_path") or row.image_source_index or row.index
    if spec.scorer == "hallusion":
        tokens = row.index.split("_")
        return (row.get("l2-category"), tokens[3] if len(tokens) > 3 else row.index)
    return row.index


def rows_within_limit(
    spec: BenchmarkSpec, rows: list[TsvRecord], limit: int, circular: bool
) -> list[TsvRecord]:
    """Whole groups, in order of first appearance, while they fit in ``limit`` rows (≥ 1 group)."""
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for position, row in enumerate(rows):
        groups[group_key(spec, row, circular)].append(position)
    kept: list[int] = []
    for members in groups.values():
        if kept and len(kept) + len(members) > limit:
            break
        kept.extend(members)
    return [rows[position] for position in sorted(kept)]


def subset_records(table: BenchmarkTable, rows: list[TsvRecord]) -> list[dict[str, object]]:
    """TSV records of ``rows``; a back-reference to a row that was cut becomes the image itself."""
    kept = {row.index for row in rows}
    records = []
    for row in rows:
        record: dict[str, object] = dict(row.fields)
        image = row.get("image")
        is_reference = image is not None and len(image.strip()) <= IMAGE_REFERENCE_MAX_LEN
        if is_reference and row.image_source_index not in kept:
            images = list(row.images)
            record["image"] = images[0] if len(images) == 1 else repr(images)
        records.append(record)
    return records


# ----- prompts ---------------------------------------------------------------------------------
def row_prompt(spec: BenchmarkSpec, row: TsvRecord, eval_config: EvalConfig) -> tuple[str, int]:
    """The prompt string the generator gets and how many images the one-image policy dropped.

    The same text as ``vlora.eval.prompts.build_prompt`` (tests check it) without decoding the
    images: 'model' wrapping gives the user message (``<image>\\n`` + content), the toolkit
    wrappings give their whole conversation string.
    """
    if eval_config.prompt_content == "vlmevalkit":
        content = vlmevalkit_content(spec.prompt_kind, row.fields)
    else:
        content = lmms_eval_content(spec.lmms_prompt, row.fields)
    kept = min(len(row.images), MAX_IMAGES)
    if eval_config.prompt_wrapping == "model":
        user, _ = wrap_prompt(content, kept, "vlmevalkit-2024")
        return user, len(row.images) - kept
    _, conversation = wrap_prompt(content, kept, eval_config.prompt_wrapping)
    return conversation, len(row.images) - kept


def prompt_input(eval_config: EvalConfig) -> str:
    """How ``vlora.eval.generate_fn.BatchGenerator`` must read the prompt strings."""
    return "user" if eval_config.prompt_wrapping == "model" else "conversation"


def _decode_image(row: TsvRecord, where: str) -> bytes:
    try:
        return base64.b64decode(row.images[0])
    except ValueError as exc:
        raise BenchmarkDataError(f"{where}: row index={row.index}: image is not base64") from exc


# ----- one benchmark ---------------------------------------------------------------------------
def prepare_benchmark(
    position: int, entry: BenchmarkEntry, eval_config: EvalConfig, work_dir: Path
) -> PreparedBenchmark:
    """Source → validated table → limit → prompts (see module docstring)."""
    where = entry_field(position)
    spec = get_benchmark(entry.key)
    data_dir = work_dir / "data"
    source_copy = data_dir / f"{entry.key}.source.tsv"  # built or fetched; becomes <KEY>.tsv
    counts: dict[str, Any] = {}
    if entry.data is None:
        build = build_local_benchmark(entry.key, source_copy, images=entry.images)
        source, counts["built"] = build.path, build.to_dict()
    elif fs.is_local(entry.data):
        source = Path(fs.filesystem(entry.data)[1])
    else:
        source = fetch_remote(entry.data, source_copy)
    try:
        table = read_benchmark_tsv(
            source,
            required_columns=spec.required_columns,
            na_mode=eval_config.scoring.na_mode,
            validate_images=True,
        )
    except BenchmarkDataError as exc:
        raise BenchmarkDataError(f"{where}.data ({entry.key}): {exc}") from None
    if not table.rows:
        raise BenchmarkDataError(f"{where}.data ({entry.key}): {source} has no row with an image")
    rows = table.rows
    limit = entry.limit or eval_config.limit
    circular = bool(eval_config.scoring.circular)
    if limit is not None and len(rows) > limit:
        rows = rows_within_limit(spec, rows, limit, circular)
    counts["rows_in_source"] = len(table.rows)
    counts["rows_left_out_by_limit"] = len(table.rows) - len(rows)
    counts["rows_dropped_without_image"] = len(table.dropped_without_image)
    scored = data_dir / f"{entry.key}.tsv"
    if len(rows) < len(table.rows):
        write_benchmark_tsv(scored, table.columns, subset_records(table, rows))
        table = read_benchmark_tsv(
            scored,
            required_columns=spec.required_columns,
            na_mode=eval_config.scoring.na_mode,
            validate_images=False,  # same payloads, checked above
        )
    elif source == source_copy:
        source_copy.replace(scored)  # the whole built/fetched file is the scored one
        table.path = scored
    source_copy.unlink(missing_ok=True)
    prompts, image_ids, images, dropped = [], [], {}, 0
    for row in table.rows:
        text, row_dropped = row_prompt(spec, row, eval_config)
        prompts.append(text)
        dropped += row_dropped
        if row.images:
            image_id = f"{row.image_source_index}"
            if image_id not in images:
                images[image_id] = _decode_image(row, where)
            image_ids.append(image_id)
        else:
            image_ids.append("")
    counts["rows_evaluated"] = len(table.rows)
    counts["images_dropped_by_policy"] = dropped
    counts["distinct_images"] = len(images)
    budgets = eval_config.max_new_tokens
    max_new_tokens = entry.max_new_tokens or getattr(budgets, spec.prompt_kind)
    return PreparedBenchmark(
        key=entry.key,
        spec=spec,
        field=where,
        data_path=table.path,
        table=table,
        prompts=prompts,
        image_ids=image_ids,
        images=images,
        max_new_tokens=max_new_tokens,
        counts=counts,
    )


def prepare_all(eval_config: EvalConfig, work_dir: Path) -> list[PreparedBenchmark]:
    """Every configured benchmark, in order; the first bad one raises (nothing loaded yet)."""
    check_entry_paths(eval_config)
    prepared = []
    for position, entry in enumerate(eval_config.benchmarks):
        benchmark = prepare_benchmark(position, entry, eval_config, work_dir)
        logger.info(
            "[eval] %s: %d rows (%d left out by the limit), %d images, data %s",
            benchmark.key,
            benchmark.counts["rows_evaluated"],
            benchmark.counts["rows_left_out_by_limit"],
            benchmark.counts["distinct_images"],
            benchmark.data_path,
        )
        prepared.append(benchmark)
    return prepared
