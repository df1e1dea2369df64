"""SFT data of the download stage: one LLaVA-format conversations file plus its image folder.

Format (llava_v1_5_mix665k.json): a JSON list of `{"id", "image" (path relative to the image
folder; absent for text-only records), "conversations": [{"from": "human"|"gpt", "value"}, …]}`.
Sources: `llava` (user files, the JSON always copied into the stage output, images copied or
read in place), `easyvqa` (generated from the train split, images copied), `none` (an empty
list). Records are never dropped here; malformed records and missing images are counted and
listed by id, and the SFT dataset decides (and reports) what it can train on.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pipelines.config.download import EasyVQASft, LlavaSft, NoSft
from pipelines.core import fs
from pipelines.download import easyvqa
from pipelines.download.capsfusion import select_rows

LISTED_IDS = 20  # ids listed per problem in the summary (the counts are complete)


@dataclass
class SftData:
    json_path: str
    images_folder: str
    summary: dict[str, Any]


def record_problem(record: Any) -> str | None:
    """Why a record is malformed, or None."""
    if not isinstance(record, dict):
        return "not_an_object"
    if "id" not in record:
        return "missing_id"
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return "no_conversations"
    for turn in turns:
        if not isinstance(turn, dict) or turn.get("from") not in ("human", "gpt"):
            return "bad_turn"
        if not isinstance(turn.get("value"), str):
            return "bad_turn"
    if "image" in record and not isinstance(record["image"], str):
        return "bad_image_path"
    return None


def describe_records(records: list[Any]) -> dict[str, Any]:
    malformed: dict[str, list[str]] = {}
    image_records = text_only = turns = 0
    for index, record in enumerate(records):
        problem = record_problem(record)
        if problem is not None:
            rid = record.get("id", f"#{index}") if isinstance(record, dict) else f"#{index}"
            malformed.setdefault(problem, []).append(str(rid))
            continue
        image_records += "image" in record
        text_only += "image" not in record
        turns += sum(1 for t in record["conversations"] if t["from"] == "gpt")
    return {
        "records": len(records),
        "image_records": image_records,
        "text_only_records": text_only,
        "answer_turns": turns,
        "malformed": {k: len(v) for k, v in sorted(malformed.items())},
        "malformed_ids": {k: v[:LISTED_IDS] for k, v in sorted(malformed.items())},
    }


def _copy(source: str, target: str) -> bool:
    """Copy unless the target exists (resume); False when the source is missing."""
    if fs.exists(target):
        return True
    filesystem, path = fs.filesystem(source)
    try:
        data = filesystem.cat_file(path)
    except FileNotFoundError:
        return False
    fs.write_bytes_atomic(target, data)
    return True


def _write_json(url: str, records: list[Any]) -> None:
    fs.write_bytes_atomic(url, json.dumps(records, ensure_ascii=False).encode())


def prepare_easyvqa(cfg: EasyVQASft, seed: int, folder: str) -> SftData:
    from pipelines.download.easyvqa_sft import SPLIT, build_conversations

    records, ids, caption_counts = build_conversations(cfg, seed)
    images = fs.join(folder, "images")
    source = easyvqa.image_folder(SPLIT)
    with ThreadPoolExecutor(max_workers=8) as pool:
        copied = list(
            pool.map(
                lambda i: _copy(
                    str(source / f"{i}.png"), fs.join(images, easyvqa.image_path(SPLIT, i))
                ),
                ids,
            )
        )
    if not all(copied):
        raise FileNotFoundError(f"easy-vqa images missing from {source}")
    json_path = fs.join(folder, "conversations.json")
    _write_json(json_path, records)  # last: its presence means the images are there
    summary = {"kind": "easyvqa", "split": SPLIT, "images": len(ids), **describe_records(records)}
    summary["facts"] = caption_counts
    return SftData(json_path, images, summary)


def prepare_llava(cfg: LlavaSft, seed: int, folder: str, threads: int) -> SftData:
    records = fs.read_json(cfg.json_path)
    if not isinstance(records, list):
        raise ValueError(f"download.sft.json_path: {cfg.json_path} is not a JSON list of records")
    available = len(records)
    if cfg.max_records is not None:
        records = [records[i] for i in select_rows(len(records), cfg.max_records, seed)]
    summary = {"kind": "llava", "records_available": available, **describe_records(records)}
    wanted = sorted({r["image"] for r in records if record_problem(r) is None and "image" in r})
    if wanted and cfg.image_folder is None:
        raise ValueError(
            f"download.sft.image_folder: required, {len(wanted)} records of {cfg.json_path} "
            "have an image"
        )
    images = (
        cfg.image_folder
        if wanted and not cfg.copy_images and cfg.image_folder
        else fs.join(folder, "images")
    )
    fs.makedirs(fs.join(folder, "images"))
    missing: list[str] = []
    if wanted and (cfg.copy_images or cfg.check_images):
        assert cfg.image_folder is not None

        def present(relative: str) -> bool:
            source = fs.join(cfg.image_folder, relative)
            if cfg.copy_images:
                return _copy(source, fs.join(folder, "images", relative))
            return fs.exists(source)

        with ThreadPoolExecutor(max_workers=max(4, threads)) as pool:
            missing = [p for p, ok in zip(wanted, pool.map(present, wanted), strict=True) if not ok]
        summary["images_checked"] = True
    else:
        summary["images_checked"] = False
    missing_set = set(missing)
    missing_ids = [
        str(r["id"]) for r in records if isinstance(r, dict) and r.get("image") in missing_set
    ]
    summary.update(
        images=len(wanted) - len(missing),
        missing_images=len(missing_ids),
        missing_image_ids=missing_ids[:LISTED_IDS],
        images_copied=cfg.copy_images,
    )
    json_path = fs.join(folder, "conversations.json")
    _write_json(json_path, records)
    return SftData(json_path, images, summary)


def prepare_none(folder: str) -> SftData:
    json_path = fs.join(folder, "conversations.json")
    fs.makedirs(fs.join(folder, "images"))
    _write_json(json_path, [])
    return SftData(json_path, fs.join(folder, "images"), {"kind": "none", **describe_records([])})


def prepare_sft(
    cfg: NoSft | LlavaSft | EasyVQASft, seed: int, folder: str, threads: int
) -> SftData:
    if isinstance(cfg, EasyVQASft):
        return prepare_easyvqa(cfg, seed, folder)
    if isinstance(cfg, LlavaSft):
        return prepare_llava(cfg, seed, folder, threads)
    return prepare_none(folder)
