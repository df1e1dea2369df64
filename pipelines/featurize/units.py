"""Work units of the features stage and reading their samples.

A unit is one output file: a pre-training shard (`{shard}.tar` → `pretrain/{shard}.parquet`) or
a fixed slice of the SFT image list (sorted unique "image" paths of the conversations →
`sft/part-{i:05d}.parquet`). Units are deterministic, so a rerun finds the same names.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from pipelines.core import fs


@dataclass(frozen=True)
class WorkUnit:
    kind: str  # "pretrain" (a webdataset tar) or "sft" (a list of image files)
    name: str  # output file stem
    source: str  # tar URL, or the SFT image folder
    images: tuple[str, ...] = ()  # SFT: image paths relative to `source`

    def output(self, output_dir: str) -> str:
        return fs.join(output_dir, self.kind, f"{self.name}.parquet")

    def to_row(self) -> dict:
        return {"unit": json.dumps(asdict(self))}

    @classmethod
    def from_row(cls, row: dict) -> WorkUnit:
        data = json.loads(row["unit"])
        data["images"] = tuple(data["images"])
        return cls(**data)


@dataclass
class Sample:
    key: str
    image_bytes: bytes | None  # None: the file is missing
    caption: str = ""
    captions_json: str = "{}"


def pretrain_units(shard_folder: str) -> list[WorkUnit]:
    filesystem, path = fs.filesystem(shard_folder)
    tars = sorted(p for p in filesystem.ls(path, detail=False) if p.endswith(".tar"))
    protocol = shard_folder.split("://", 1)[0] + "://" if "://" in shard_folder else ""
    return [
        WorkUnit("pretrain", tar.rsplit("/", 1)[-1][: -len(".tar")], protocol + tar) for tar in tars
    ]


def sft_units(json_url: str, image_folder: str, per_file: int) -> list[WorkUnit]:
    filesystem, path = fs.filesystem(json_url)
    with filesystem.open(path, "rb") as handle:
        records = json.load(handle)
    images = sorted({r["image"] for r in records if isinstance(r, dict) and r.get("image")})
    return [
        WorkUnit("sft", f"part-{i // per_file:05d}", image_folder, tuple(images[i : i + per_file]))
        for i in range(0, len(images), per_file)
    ]


def _caption_columns(meta: dict) -> str:
    keep = {
        k: v for k, v in meta.items() if k in {"caption", "capsfusion", "laion_2b", "laion_coco"}
    }
    return json.dumps(keep, ensure_ascii=False, sort_keys=True)


def read_tar_samples(url: str) -> Iterator[Sample]:
    """Samples of an img2dataset webdataset shard: {key}.jpg/.png/.webp, .txt, .json."""
    filesystem, path = fs.filesystem(url)
    with filesystem.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
        current: dict[str, bytes] = {}
        current_key = None
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.rpartition(".")
            if current_key is not None and key != current_key:
                yield _sample(current_key, current)
                current = {}
            current_key = key
            current[ext] = tar.extractfile(member).read()  # type: ignore[union-attr]
        if current_key is not None:
            yield _sample(current_key, current)


def _sample(key: str, files: dict[str, bytes]) -> Sample:
    image = next((files[e] for e in ("jpg", "jpeg", "png", "webp") if e in files), None)
    caption = files.get("txt", b"").decode("utf-8", errors="replace")
    meta = json.loads(files["json"]) if "json" in files else {}
    return Sample(key.rsplit("/", 1)[-1], image, caption, _caption_columns(meta))


def read_folder_samples(folder: str, images: tuple[str, ...]) -> Iterator[Sample]:
    for relative in images:
        url = fs.join(folder, relative)
        try:
            filesystem, path = fs.filesystem(url)
            with filesystem.open(path, "rb") as handle:
                data = handle.read()
        except (FileNotFoundError, IsADirectoryError):
            data = None
        yield Sample(relative, data)


def read_unit(unit: WorkUnit) -> Iterator[Sample]:
    if unit.kind == "pretrain":
        return read_tar_samples(unit.source)
    return read_folder_samples(unit.source, unit.images)


def tar_bytes_for_tests(samples: dict[str, tuple[bytes, str]]) -> bytes:
    """A webdataset tar in img2dataset's layout (used by tests and benchmarks)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for key, (image, caption) in samples.items():
            for ext, data in (
                ("jpg", image),
                ("txt", caption.encode()),
                ("json", json.dumps({"key": key, "caption": caption}).encode()),
            ):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
