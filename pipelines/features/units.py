"""Work units of the features stage and reading their samples.

A unit is one output file: a pre-training shard (`{shard}.tar` → `pretrain/{shard}.parquet`) or
a fixed slice of the SFT image list (sorted unique "image" paths of the conversations →
`sft/part-{i:05d}.parquet`). Units are deterministic, so a rerun finds the same names.

Samples carry either the image bytes or the reason they could not be read; nothing is dropped
here, the decoder and the writer count every failure.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import fsspec

from pipelines.core import fs

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
# img2dataset's own per-sample metadata; every other string field of `{key}.json` is a caption
# column kept with `save_additional_columns` (laion_2b, laion_coco, capsfusion, …).
IMG2DATASET_FIELDS = frozenset(
    {
        "url",
        "key",
        "status",
        "error_message",
        "width",
        "height",
        "original_width",
        "original_height",
        "exif",
        "sha256",
        "md5",
        "source_index",
    }
)


@dataclass(frozen=True)
class WorkUnit:
    kind: str  # "pretrain" (a webdataset tar) or "sft" (a list of image files)
    name: str  # output file stem
    source: str  # tar URL, or the SFT image folder
    images: tuple[str, ...] = ()  # SFT: image paths relative to `source`

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"

    def output(self, output_dir: str) -> str:
        return fs.join(output_dir, self.kind, f"{self.name}.parquet")

    def to_row(self) -> dict[str, str]:
        return {"unit": json.dumps(asdict(self))}

    @classmethod
    def from_json(cls, text: str) -> WorkUnit:
        data = json.loads(text)
        data["images"] = tuple(data["images"])
        return cls(**data)


@dataclass
class Sample:
    key: str
    image_bytes: bytes | None  # None: see `read_error`
    caption: str = ""
    captions_json: str = "{}"
    read_error: tuple[str, str] | None = None  # (reason, detail) when the image was not read


def _url(filesystem: fsspec.AbstractFileSystem, path: str) -> str:
    protocol = (
        filesystem.protocol if isinstance(filesystem.protocol, str) else filesystem.protocol[0]
    )
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def pretrain_units(shard_folder: str) -> list[WorkUnit]:
    """One unit per `*.tar` of the folder (img2dataset's `.parquet`/stats files are ignored)."""
    filesystem, path = fs.filesystem(shard_folder)
    tars = sorted(p for p in filesystem.ls(path, detail=False) if p.endswith(".tar"))
    return [
        WorkUnit("pretrain", posixpath.basename(tar)[: -len(".tar")], _url(filesystem, tar))
        for tar in tars
    ]


def sft_image_paths(json_url: str) -> list[str]:
    """Sorted unique "image" paths of a LLaVA-format JSON (text-only records have none)."""
    records = fs.read_json(json_url)
    if not isinstance(records, list):
        raise ValueError(f"{json_url}: not a JSON list of conversation records")
    return sorted(
        {r["image"] for r in records if isinstance(r, dict) and isinstance(r.get("image"), str)}
    )


def sft_units(json_url: str, image_folder: str, per_file: int) -> list[WorkUnit]:
    images = sft_image_paths(json_url)
    return [
        WorkUnit("sft", f"part-{i // per_file:05d}", image_folder, tuple(images[i : i + per_file]))
        for i in range(0, len(images), per_file)
    ]


def caption_columns(meta: dict) -> str:
    """Every caption variant of an img2dataset `{key}.json`, as a JSON object string."""
    keep = {k: v for k, v in meta.items() if k not in IMG2DATASET_FIELDS and isinstance(v, str)}
    return json.dumps(keep, ensure_ascii=False, sort_keys=True)


def split_member_name(name: str) -> tuple[str, str]:
    """webdataset's convention: the key is the path up to the first dot of the base name."""
    folder, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return posixpath.join(folder, stem), ext.lower()


def read_tar_samples(url: str) -> Iterator[Sample]:
    """Samples of an img2dataset webdataset shard ({key}.jpg/.png/.webp, .txt, .json), streamed.

    Members of a sample are adjacent in the tar (webdataset's rule). A tar that cannot be read
    to its end raises (tarfile.TarError / OSError): the unit fails with that error instead of
    silently yielding part of the shard.
    """
    filesystem, path = fs.filesystem(url)
    with filesystem.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
        current: dict[str, bytes] = {}
        current_key: str | None = None
        for member in tar:
            if not member.isfile():
                continue
            key, ext = split_member_name(member.name)
            if current_key is not None and key != current_key:
                yield _sample(current_key, current)
                current = {}
            current_key = key
            current[ext] = tar.extractfile(member).read()  # type: ignore[union-attr]
        if current_key is not None:
            yield _sample(current_key, current)


class ShardMismatchError(ValueError):
    """A shard whose sample count disagrees with its img2dataset stats (cut or replaced)."""


def stats_successes(tar_url: str) -> int | None:
    """`successes` of img2dataset's `{shard}_stats.json` next to the tar, if there is one."""
    stats_url = tar_url[: -len(".tar")] + "_stats.json"
    try:
        return int(fs.read_json(stats_url)["successes"])
    except (FileNotFoundError, KeyError, TypeError, ValueError):
        return None


def read_checked_tar_samples(url: str) -> Iterator[Sample]:
    """`read_tar_samples`, then a check against the shard's stats file when it has one.

    A tar cut exactly at a member boundary reads as a shorter, valid tar; the count that
    img2dataset recorded is the only way to notice.
    """
    expected = stats_successes(url)
    count = 0
    for sample in read_tar_samples(url):
        count += 1
        yield sample
    if expected is not None and count != expected:
        raise ShardMismatchError(
            f"{url}: {count} samples in the tar, but its img2dataset stats say {expected} "
            "successes (a cut or replaced shard; redo the download of this shard)"
        )


def _sample(key: str, files: dict[str, bytes]) -> Sample:
    image = next((files[e] for e in IMAGE_EXTENSIONS if e in files), None)
    caption = files.get("txt", b"").decode("utf-8", errors="replace")
    try:
        meta = json.loads(files["json"]) if "json" in files else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        meta = {}
    error = None if image is not None else ("missing_image", f"no image among {sorted(files)}")
    return Sample(posixpath.basename(key), image, caption, caption_columns(meta), error)


def read_folder_samples(folder: str, images: tuple[str, ...]) -> Iterator[Sample]:
    """The files `images` (paths relative to `folder`, kept verbatim as keys)."""
    for relative in images:
        data, error = None, None
        try:
            filesystem, path = fs.filesystem(fs.join(folder, relative))
            with filesystem.open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError as err:
            error = ("missing_image", f"referenced by the SFT JSON, not found: {err}")
        except OSError as err:  # a folder, no permission, an I/O error
            error = ("unreadable", f"{type(err).__name__}: {err}")
        yield Sample(relative, data, read_error=error)


def read_unit(unit: WorkUnit) -> Iterator[Sample]:
    if unit.kind == "pretrain":
        return read_checked_tar_samples(unit.source)
    return read_folder_samples(unit.source, unit.images)
