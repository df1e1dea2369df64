"""SFT data: LLaVA-format conversations → tokenised samples, every unusable record accounted for.

Input: `llava_v1_5_mix665k.json`-format records (a JSON array, or JSON lines)::

    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat are the colors of the bus?"},
                       {"from": "gpt", "value": "The bus is white and red."}, ...]}

Steps, each counting what it rejects by reason and listing the record ids (`DataReport`):

1. `parse_record`: structure. Problems: `not_an_object`, `missing_field`, `bad_field_type`,
   `empty_conversation`, `bad_role` (only "human"/"gpt"), `not_alternating` (human, gpt, human,
   …, ending with gpt), `multiple_image_tokens`, `image_token_without_image`,
   `image_token_in_answer`, `image_missing` (the "image" is not in the feature table: reported,
   never swapped for a blank image). LLaVA-style, `<image>` is stripped wherever it is in the
   first question and put in front as "<image>\\n" (notes `image_token_moved`, or
   `image_token_added` when an image record had none). Records without "image" are text-only
   (note `text_only`): no placeholder, `has_image` False, ΔW = 0.
2. `tokenize_record`: the model's template (vicuna_v1 for the paper, chatml for SmolLM2) via
   `encode_conversation`, which labels tokens by character spans: only the assistant answers
   and their end-of-turn token are supervised. Problems: `straddling_tokens` (a token crosses a
   supervised boundary), `round_trip_mismatch` (the decoded supervised tokens do not give back
   the answer text), `truncated_no_supervised` (every supervised token lies beyond max_length:
   such a record would train on nothing). Cut records keep their first max_length tokens
   (note `truncated`).
3. `DataReport.check(max_bad_fraction)`: above it, building fails with the ids by reason.

The Ray Data builder of the training rows (`pipelines/training/datasets.py`) runs the same two functions
on workers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from vlora.data.report import DataReport
from vlora.data.templates import ConversationTemplate, Turn, get_template
from vlora.data.tokenize import EncodedText, encode_conversation, round_trip_mismatches

LLAVA_IMAGE_TOKEN = "<image>"  # the placeholder as written in LLaVA JSON files
ROLES = {"human": "user", "gpt": "assistant"}
DEFAULT_MAX_BAD_FRACTION = 0.01


@dataclass
class ParsedRecord:
    id: str
    turns: list[Turn]
    image: str | None  # key into the feature table (the JSON's "image"), None = text-only
    notes: list[str] = field(default_factory=list)


@dataclass
class RecordProblem:
    id: str
    reason: str
    detail: str = ""


@dataclass
class SFTSample:
    id: str
    input_ids: list[int]
    labels: list[int]
    image: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def length(self) -> int:
        return len(self.input_ids)


def load_sft_records(source: str | Path) -> list[Any]:
    """A LLaVA JSON array file, or JSON lines (one record per line)."""
    text = Path(source).read_text(encoding="utf-8")
    return parse_records_text(text, str(source))


def parse_records_text(text: str, name: str = "data") -> list[Any]:
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            return json.loads(stripped)
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise ValueError(f"{name}: not a JSON array nor JSON lines: {err}") from None


def record_id(raw: Any, index: int) -> str:
    """The record's "id" as a string, or "#<index>" when it has none."""
    if isinstance(raw, dict) and isinstance(raw.get("id"), str | int) and raw.get("id") != "":
        return str(raw["id"])
    return f"#{index}"


def parse_record(
    raw: Any,
    index: int,
    image_available: Callable[[str], bool] | None = None,
    image_token: str = LLAVA_IMAGE_TOKEN,
) -> ParsedRecord | RecordProblem:
    """Validate one record and move `<image>` to the front of the first question.

    `image_available(key)` says whether the feature table has the image; None skips that check
    (inspection without features).
    """
    rid = record_id(raw, index)
    if not isinstance(raw, dict):
        return RecordProblem(rid, "not_an_object", type(raw).__name__)
    for name in ("id", "conversations"):
        if name not in raw:
            return RecordProblem(rid, "missing_field", name)
    if not isinstance(raw["id"], str | int) or raw["id"] == "":
        return RecordProblem(rid, "bad_field_type", "id must be a non-empty string")
    conversations = raw["conversations"]
    if not isinstance(conversations, list):
        return RecordProblem(rid, "bad_field_type", "conversations must be a list")
    if not conversations:
        return RecordProblem(rid, "empty_conversation")
    image = raw.get("image")
    if "image" in raw and (not isinstance(image, str) or not image):
        return RecordProblem(rid, "bad_field_type", "image must be a non-empty string")
    turns: list[Turn] = []
    for position, message in enumerate(conversations):
        if not isinstance(message, dict):
            return RecordProblem(rid, "bad_field_type", f"conversations[{position}] not an object")
        for name in ("from", "value"):
            if name not in message:
                return RecordProblem(rid, "missing_field", f"conversations[{position}].{name}")
        if not isinstance(message["value"], str):
            return RecordProblem(rid, "bad_field_type", f"conversations[{position}].value")
        role = ROLES.get(message["from"]) if isinstance(message["from"], str) else None
        if role is None:
            return RecordProblem(
                rid, "bad_role", f"conversations[{position}].from={message['from']!r}"
            )
        expected = "user" if position % 2 == 0 else "assistant"
        if role != expected:
            return RecordProblem(rid, "not_alternating", f"conversations[{position}] is {role}")
        turns.append(Turn(role, message["value"]))
    if turns[-1].role != "assistant":
        return RecordProblem(rid, "not_alternating", "the last message is not an answer")
    count = sum(t.text.count(image_token) for t in turns)
    if any(image_token in t.text for t in turns if t.role == "assistant"):
        return RecordProblem(rid, "image_token_in_answer")
    if image is None:
        if count:
            return RecordProblem(rid, "image_token_without_image", f"{count} {image_token}")
        return ParsedRecord(rid, turns, None, notes=["text_only"])
    if count > 1:
        return RecordProblem(rid, "multiple_image_tokens", f"{count} {image_token}")
    if image_available is not None and not image_available(image):
        return RecordProblem(rid, "image_missing", image)
    notes = []
    if count == 0:
        notes.append("image_token_added")
    elif not turns[0].text.startswith(image_token + "\n"):
        notes.append("image_token_moved")
    return ParsedRecord(rid, _image_token_in_front(turns, image_token), image, notes)


def _image_token_in_front(turns: list[Turn], image_token: str) -> list[Turn]:
    """LLaVA's preprocess_multimodal: drop the token wherever it is (stripping the text it was
    in), then open the first question with "<image>\n"."""
    moved = []
    for i, turn in enumerate(turns):
        text = turn.text.replace(image_token, "").strip() if image_token in turn.text else turn.text
        if i == 0:
            text = image_token + "\n" + text.strip()
        moved.append(Turn(turn.role, text))
    return moved


def parse_records(
    raw_records: Iterable[Any],
    image_available: Callable[[str], bool] | None = None,
    image_token: str = LLAVA_IMAGE_TOKEN,
) -> tuple[list[ParsedRecord], DataReport]:
    """Parse every record; the report counts all of them (`total`) and the rejected by reason."""
    report = DataReport()
    parsed: list[ParsedRecord] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_records):
        report.total += 1
        result = parse_record(raw, index, image_available, image_token)
        if isinstance(result, RecordProblem):
            report.add_problem(result.id, result.reason, result.detail)
            continue
        if result.id in seen:
            result.notes.append("duplicate_id")
        seen.add(result.id)
        for note in result.notes:
            report.add_note(result.id, note)
        parsed.append(result)
    return parsed, report


def tokenize_record(
    record: ParsedRecord,
    tokenizer: PreTrainedTokenizerBase,
    template: ConversationTemplate,
    max_length: int | None,
    image_token: str = LLAVA_IMAGE_TOKEN,
) -> tuple[SFTSample | RecordProblem, EncodedText]:
    """Tokenise with the template; reject records whose labels cannot be trusted."""
    encoded = encode_conversation(tokenizer, template, record.turns, image_token)
    if encoded.num_straddling_tokens:
        problem = RecordProblem(
            record.id, "straddling_tokens", f"{encoded.num_straddling_tokens} token(s)"
        )
        return problem, encoded
    cut = encoded.truncate(max_length) if max_length else encoded
    bad = round_trip_mismatches(tokenizer, cut)
    if bad:
        text = cut.span_texts[bad[0]]
        detail = f"answer {bad[0]}: {text[:60]!r}"
        return RecordProblem(record.id, "round_trip_mismatch", detail), cut
    if cut.num_supervised == 0:
        reason = "truncated_no_supervised" if cut.truncated_from else "no_supervised_tokens"
        detail = f"{cut.truncated_from or len(cut.input_ids)} tokens, max_length {max_length}"
        return RecordProblem(record.id, reason, detail), cut
    if record.image is not None and cut.num_images != 1:
        return RecordProblem(record.id, "truncated_image", f"max_length {max_length}"), cut
    notes = ["truncated"] if cut.truncated_from else []
    return SFTSample(record.id, cut.input_ids, cut.labels, record.image, notes), cut


def tokenize_records(
    records: Iterable[ParsedRecord],
    tokenizer: PreTrainedTokenizerBase,
    template: ConversationTemplate,
    max_length: int | None,
    image_token: str = LLAVA_IMAGE_TOKEN,
) -> tuple[list[SFTSample], DataReport]:
    """Samples of the records that tokenise cleanly; the report's `total` stays 0 (records are
    counted once, by `parse_records`), so the two reports merge."""
    report = DataReport()
    samples = []
    for record in records:
        result, _ = tokenize_record(record, tokenizer, template, max_length, image_token)
        if isinstance(result, RecordProblem):
            report.add_problem(result.id, result.reason, result.detail)
            continue
        for note in result.notes:
            report.add_note(result.id, note)
        samples.append(result)
    return samples, report


def build_sft_samples(
    raw_records: Iterable[Any],
    tokenizer: PreTrainedTokenizerBase,
    template: ConversationTemplate | str,
    max_length: int | None,
    image_available: Callable[[str], bool] | None = None,
    image_token: str = LLAVA_IMAGE_TOKEN,
) -> tuple[list[SFTSample], DataReport]:
    template = get_template(template) if isinstance(template, str) else template
    parsed, report = parse_records(raw_records, image_available, image_token)
    samples, token_report = tokenize_records(parsed, tokenizer, template, max_length, image_token)
    return samples, report.merge(token_report)
