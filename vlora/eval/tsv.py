"""Reader for VLMEvalKit benchmark TSV files.

VLMEvalKit stores one benchmark as one TSV written by ``pandas.to_csv(sep='\\t', quoting=QUOTE_ALL)``
and read back with ``pandas.read_csv(sep='\\t')``. This module reads the same files with the standard
``csv`` module and reproduces the conventions that matter for scoring and prompting
(docs/benchmark-scoring.md, "VLMEvalKit TSV files"):

* fields may be double-quoted and contain tabs and embedded newlines, so records are parsed, never
  split line by line;
* pandas turns empty cells *and* strings such as ``None``, ``NA`` or ``nan`` into NaN (``na_mode =
  "pandas"``, the default, because that is what VLMEvalKit saw); ``na_mode="empty"`` treats only
  empty cells as missing;
* an ``image`` field of at most 64 characters is the ``index`` of another row whose image is reused
  (circular copies in MMBench/CCBench, the second MME question of an image);
* a multi-image row holds a Python list literal of base64 strings (``"['b64_1', 'b64_2']"``);
  ``image_path`` may be a list literal too;
* rows whose ``image`` is missing are dropped, as VLMEvalKit does (``skip_noimg``), and counted.

Malformed input raises :class:`~vlora.eval.errors.BenchmarkDataError` naming the file, the row's
``index`` and its line numbers. :func:`write_benchmark_tsv` writes files in the same format (used
for the local benchmarks and for row subsets of a benchmark).
"""

from __future__ import annotations

import ast
import base64
import binascii
import csv
import io
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError

from vlora.eval.errors import BenchmarkDataError
from vlora.utils.atomic import atomic_write_text

NaMode = Literal["pandas", "empty"]

# pandas.read_csv's default na_values (pandas 2.x), applied to every column. "None" is in it, which is
# how a legitimate MMMU option "None" became NaN upstream (VLMEvalKit #677).
PANDAS_NA_STRINGS = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)

# VLMEvalKit: an image field this short is the index of the row that carries the image.
IMAGE_REFERENCE_MAX_LEN = 64
# Offset between a question and its circular copies (copy k has index i + k * 1_000_000).
CIRCULAR_INDEX_STRIDE = 1_000_000

_INTEGER_RE = re.compile(r"^[+-]?\d+$")


def canonical_index(value: object) -> str:
    """The canonical string form of a row index: integers lose leading zeros and signs of zero.

    pandas parses an all-integer ``index`` column as int, so ``"007"`` and ``7`` name the same row;
    string indices (HallusionBench) are kept as they are, stripped of surrounding whitespace.
    """
    if isinstance(value, bool):
        raise TypeError(f"an index cannot be a bool: {value!r}")
    if isinstance(value, int):
        return str(value)
    text = str(value).strip()
    return str(int(text)) if _INTEGER_RE.match(text) else text


@dataclass(frozen=True)
class TsvRecord:
    """One benchmark row with its images resolved.

    ``fields`` maps every header column to its text, or ``None`` when the cell is missing (NaN).
    ``images`` holds the base64 payloads of the row's images after following an index
    back-reference; ``image_source_index`` is the index of the row that physically holds them.
    """

    index: str
    fields: Mapping[str, str | None]
    images: tuple[str, ...]
    image_paths: tuple[str, ...]
    image_source_index: str | None
    first_line: int
    last_line: int

    def get(self, column: str) -> str | None:
        """The cell text of ``column``, or None when the cell is missing or the column absent."""
        return self.fields.get(column)

    @property
    def where(self) -> str:
        """Human-readable location used in error messages."""
        lines = (
            f"line {self.first_line}"
            if self.first_line == self.last_line
            else f"lines {self.first_line}-{self.last_line}"
        )
        return f"row index={self.index} ({lines})"

    def decode_images(self) -> list[Image.Image]:
        """Decode the row's images to RGB PIL images (fully loaded)."""
        images = []
        for position, payload in enumerate(self.images):
            try:
                image = Image.open(io.BytesIO(base64.b64decode(payload)))
                images.append(image.convert("RGB"))
            except (binascii.Error, UnidentifiedImageError, OSError) as exc:
                raise BenchmarkDataError(
                    f"{self.where}: image {position + 1} cannot be decoded ({exc})"
                ) from exc
        return images

    @property
    def main_index(self) -> int:
        """``index % 1_000_000``: the question a circular copy belongs to (integer indices only)."""
        if not _INTEGER_RE.match(self.index):
            raise BenchmarkDataError(f"{self.where}: circular evaluation needs an integer index")
        return int(self.index) % CIRCULAR_INDEX_STRIDE


@dataclass
class BenchmarkTable:
    """A parsed benchmark TSV: header, rows in file order, and what was dropped."""

    path: Path
    columns: tuple[str, ...]
    rows: list[TsvRecord]
    dropped_without_image: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_index = {row.index: row for row in self.rows}

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[TsvRecord]:
        return iter(self.rows)

    def __getitem__(self, index: object) -> TsvRecord:
        return self._by_index[canonical_index(index)]

    def __contains__(self, index: object) -> bool:
        return canonical_index(index) in self._by_index


def parse_list_literal(text: str) -> list[str] | None:
    """Parse ``"['a', 'b']"`` (VLMEvalKit ``toliststr``); None when ``text`` is not a list literal.

    ``ast.literal_eval`` replaces upstream's ``eval`` so a crafted TSV cannot run code.
    """
    stripped = text.strip()
    if not (stripped.startswith("[") and stripped.endswith("]")):
        return None
    try:
        value = ast.literal_eval(stripped)
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"malformed list literal ({exc})") from exc
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("list literal must contain only strings")
    return value


def _check_image_payload(payload: str, where: str, position: int) -> None:
    """Raise when ``payload`` is not valid base64 of an image PIL can identify (header only)."""
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BenchmarkDataError(f"{where}: image {position} is not valid base64 ({exc})") from exc
    try:
        # open + verify read the container structure without decoding pixels: cheap on real files.
        with Image.open(io.BytesIO(raw)) as image:
            image.verify()
    except (UnidentifiedImageError, OSError) as exc:
        raise BenchmarkDataError(
            f"{where}: image {position} decodes from base64 but is not an image ({exc})"
        ) from exc


def _read_raw_records(
    path: Path,
) -> tuple[list[str], list[tuple[list[str], int, int]]]:
    """Header and (cells, first_line, last_line) for each non-blank record."""
    # Real MMMU/MMBench cells hold megabytes of base64; the default 128 KiB field limit is too small.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise BenchmarkDataError(f"{path}: cannot open benchmark file ({exc})") from exc
    with handle:
        reader = csv.reader(handle, delimiter="\t", quotechar='"', doublequote=True, strict=True)
        records: list[tuple[list[str], int, int]] = []
        header: list[str] | None = None
        previous_line = 0
        try:
            for cells in reader:
                first_line, last_line = previous_line + 1, reader.line_num
                previous_line = reader.line_num
                if not cells or cells == [""]:
                    continue  # pandas skips blank lines
                if header is None:
                    header = [name.strip() for name in cells]
                else:
                    records.append((cells, first_line, last_line))
        except csv.Error as exc:
            raise BenchmarkDataError(
                f"{path}: malformed TSV near line {reader.line_num} ({exc})"
            ) from exc
        except UnicodeDecodeError as exc:
            raise BenchmarkDataError(f"{path}: not UTF-8 text ({exc})") from exc
    if header is None:
        raise BenchmarkDataError(f"{path}: empty file, no header row")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise BenchmarkDataError(f"{path}: duplicate header columns {duplicates}")
    return header, records


def read_benchmark_tsv(
    path: str | Path,
    *,
    required_columns: Iterable[str] = ("index",),
    na_mode: NaMode = "pandas",
    validate_images: bool = True,
) -> BenchmarkTable:
    """Read a VLMEvalKit benchmark TSV.

    Args:
        path: the ``.tsv`` file.
        required_columns: header columns that must exist; ``index`` is always required.
        na_mode: ``"pandas"`` (VLMEvalKit-faithful NaN strings) or ``"empty"`` (only empty cells).
        validate_images: check every distinct image payload is base64 of a readable image
            (header only). Turn off only when images are known good and speed matters.

    Raises:
        BenchmarkDataError: missing column, wrong number of fields, empty or duplicate index, bad
            base64, dangling or chained image reference, malformed list literal.
    """
    path = Path(path)
    header, raw_records = _read_raw_records(path)
    missing = [name for name in ("index", *required_columns) if name not in header]
    if missing:
        raise BenchmarkDataError(
            f"{path}: missing required column(s) {sorted(set(missing))}; header has {header}"
        )
    na_strings = PANDAS_NA_STRINGS if na_mode == "pandas" else frozenset({""})

    parsed: list[tuple[str, dict[str, str | None], int, int]] = []
    seen: dict[str, int] = {}
    for cells, first_line, last_line in raw_records:
        raw_index = cells[header.index("index")].strip() if cells else ""
        where = f"row index={raw_index or '?'} (line {first_line})"
        if len(cells) != len(header):
            raise BenchmarkDataError(
                f"{path}: {where} has {len(cells)} fields but the header has {len(header)} "
                f"columns; a column is missing or a quote is unbalanced"
            )
        if raw_index in na_strings:
            raise BenchmarkDataError(f"{path}: {where} has an empty index")
        index = canonical_index(raw_index)
        if index in seen:
            raise BenchmarkDataError(
                f"{path}: {where} repeats index {index} first seen on line {seen[index]}"
            )
        seen[index] = first_line
        fields = {
            name: (None if value in na_strings else value)
            for name, value in zip(header, cells, strict=True)
        }
        parsed.append((index, fields, first_line, last_line))

    image_fields = {index: fields.get("image") for index, fields, _, _ in parsed}
    rows: list[TsvRecord] = []
    dropped: list[str] = []
    checked_payloads: set[str] = set()
    for index, fields, first_line, last_line in parsed:
        where = f"{path}: row index={index} (line {first_line})"
        image_text = fields.get("image")
        if "image" in header and image_text is None:
            dropped.append(index)  # VLMEvalKit skip_noimg: such rows are never evaluated
            continue
        images: tuple[str, ...] = ()
        source_index: str | None = None
        if image_text is not None:
            image_text = image_text.strip()
            source_index = index
            if len(image_text) <= IMAGE_REFERENCE_MAX_LEN:
                target = canonical_index(image_text)
                target_text = image_fields.get(target)
                if target not in image_fields:
                    raise BenchmarkDataError(
                        f"{where}: image field {image_text!r} is a reference to index {target}, "
                        f"which is not in the file (dangling image reference)"
                    )
                if target_text is None or len(target_text.strip()) <= IMAGE_REFERENCE_MAX_LEN:
                    raise BenchmarkDataError(
                        f"{where}: image field refers to index {target}, whose image is itself "
                        f"missing or a reference; references must point at a row holding base64"
                    )
                image_text, source_index = target_text.strip(), target
            try:
                listed = parse_list_literal(image_text)
            except ValueError as exc:
                raise BenchmarkDataError(f"{where}: image field: {exc}") from exc
            images = tuple(item.strip() for item in listed) if listed is not None else (image_text,)
            if validate_images:
                for position, payload in enumerate(images, start=1):
                    if payload not in checked_payloads:
                        _check_image_payload(payload, where, position)
                        checked_payloads.add(payload)
        image_paths: tuple[str, ...] = ()
        if fields.get("image_path") is not None:
            path_text = str(fields["image_path"])
            try:
                listed_paths = parse_list_literal(path_text)
            except ValueError as exc:
                raise BenchmarkDataError(f"{where}: image_path field: {exc}") from exc
            image_paths = tuple(listed_paths) if listed_paths is not None else (path_text,)
        rows.append(
            TsvRecord(
                index=index,
                fields=fields,
                images=images,
                image_paths=image_paths,
                image_source_index=source_index,
                first_line=first_line,
                last_line=last_line,
            )
        )
    return BenchmarkTable(
        path=path, columns=tuple(header), rows=rows, dropped_without_image=dropped
    )


def write_benchmark_tsv(
    path: str | Path,
    columns: Iterable[str],
    records: Iterable[Mapping[str, object]],
) -> Path:
    """Write ``records`` as VLMEvalKit does (``to_csv(sep='\\t', quoting=QUOTE_ALL)``), atomically.

    ``None`` becomes an empty cell (read back as missing); a column absent from a record is empty.
    The file is written to a temporary name and renamed, so a reader never sees half of it.
    """
    header = list(columns)
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(header)
    for record in records:
        writer.writerow(
            ["" if record.get(name) is None else str(record.get(name)) for name in header]
        )
    atomic_write_text(path, buffer.getvalue())
    os.chmod(path, 0o644)  # the atomic writer's temp file is private; a benchmark file is not
    return Path(path)
