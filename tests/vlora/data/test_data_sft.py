"""SFT records: validation by reason and id, <image> placement, text-only, missing images,
tokenisation problems on crafted tokenizers, truncation and the fail-above-fraction error.

The row-level checks use the plain reference rows (tests/reference_data.py), which the Ray
Data builder is checked against in tests/pipelines/datasets/test_datasets_ray.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.reference_data import sft_rows
from vlora.data.collate import collate_batch
from vlora.data.report import DataQualityError
from vlora.data.sft import (
    ParsedRecord,
    RecordProblem,
    build_sft_samples,
    load_sft_records,
    parse_record,
    parse_records,
    tokenize_record,
)
from vlora.data.templates import get_template
from vlora.data.tokenize import IGNORE_INDEX, IMAGE_TOKEN_INDEX, decode_supervised_spans


def rec(rid, *values, image=None, roles=None):
    roles = roles or ["human" if i % 2 == 0 else "gpt" for i in range(len(values))]
    record = {
        "id": rid,
        "conversations": [{"from": r, "value": v} for r, v in zip(roles, values, strict=True)],
    }
    if image is not None:
        record["image"] = image
    return record


GOOD = rec("ok-1", "<image>\nWhat is it?", "A bus.", image="a.jpg")
MALFORMED = [
    ("#1", "not_an_object", ["just a string"]),
    ("#1", "missing_field", [{"conversations": []}]),
    ("no-conv", "missing_field", [{"id": "no-conv"}]),
    ("conv-dict", "bad_field_type", [{"id": "conv-dict", "conversations": {"from": "human"}}]),
    ("empty", "empty_conversation", [{"id": "empty", "conversations": []}]),
    ("role", "bad_role", [rec("role", "hi", "yo", roles=["human", "assistant"])]),
    ("gpt-first", "not_alternating", [rec("gpt-first", "hi", "yo", roles=["gpt", "human"])]),
    ("two-human", "not_alternating", [rec("two-human", "a", "b", roles=["human", "human"])]),
    ("ends-human", "not_alternating", [rec("ends-human", "a", "b", "c")]),
    ("no-value", "missing_field", [{"id": "no-value", "conversations": [{"from": "human"}]}]),
    (
        "int-value",
        "bad_field_type",
        [{"id": "int-value", "conversations": [{"from": "human", "value": 3}]}],
    ),
    ("two-img", "multiple_image_tokens", [rec("two-img", "<image> <image>", "x", image="a.jpg")]),
    ("img-no-file", "image_token_without_image", [rec("img-no-file", "<image>\nWhat?", "x")]),
    ("img-answer", "image_token_in_answer", [rec("img-answer", "Q", "<image>", image="a.jpg")]),
    ("bad-image", "bad_field_type", [rec("bad-image", "Q", "A", image="")]),
    ("missing-img", "image_missing", [rec("missing-img", "<image>\nQ", "A", image="gone.jpg")]),
]


@pytest.mark.parametrize(
    ("expected_id", "reason", "records"), MALFORMED, ids=[f"{m[1]}-{m[0]}" for m in MALFORMED]
)
def test_malformed_records_are_counted_by_reason_and_listed_by_id(
    expected_id, reason, records
) -> None:
    raw = [GOOD, *records]
    # "#1" is the index of a record without id: GOOD is record 0.
    parsed, report = parse_records(raw, image_available=lambda key: key == "a.jpg")
    assert [p.id for p in parsed] == ["ok-1"]
    assert report.total == 2 and report.num_bad == 1
    assert report.problems == {reason: [expected_id]}


def test_image_token_is_moved_to_the_front_of_the_first_question() -> None:
    cases = {
        "front": (rec("front", "<image>\nWhat?", "A", image="x"), "<image>\nWhat?", []),
        "after": (
            rec("after", "What?\n<image>", "A", image="x"),
            "<image>\nWhat?",
            ["image_token_moved"],
        ),
        "middle": (
            rec("middle", "What <image> is it?", "A", image="x"),
            "<image>\nWhat  is it?",
            ["image_token_moved"],
        ),
        "added": (rec("added", "What?", "A", image="x"), "<image>\nWhat?", ["image_token_added"]),
        "later": (
            rec("later", "Hi", "Hello", "Now this: <image>", "A cat", image="x"),
            "<image>\nHi",
            ["image_token_moved"],
        ),
    }
    for name, (record, first, notes) in cases.items():
        parsed = parse_record(record, 0)
        assert isinstance(parsed, ParsedRecord), name
        assert parsed.turns[0].text == first, name
        assert parsed.notes == notes, name
        assert sum(t.text.count("<image>") for t in parsed.turns) == 1, name
    later = parse_record(cases["later"][0], 0)
    assert later.turns[2].text == "Now this:"


def test_text_only_records_have_no_placeholder_and_no_features(
    byte_tokenizer, tmp_path, write_features
) -> None:
    written = write_features(tmp_path / "f.parquet", ["a.jpg"])
    records = [GOOD, rec("text", "Say hi.", "Hi!")]
    rows, report = sft_rows(
        records, byte_tokenizer, "vicuna_v1", [str(tmp_path / "f.parquet")], 512
    )
    assert [r["has_image"] for r in rows] == [True, False]
    assert report.notes == {"text_only": ["text"]}
    image_item, text_item = rows
    assert (image_item["input_ids"] == IMAGE_TOKEN_INDEX).sum() == 1
    assert np.array_equal(image_item["features"], written["a.jpg"])
    assert (text_item["input_ids"] == IMAGE_TOKEN_INDEX).sum() == 0
    assert not text_item["features"].any() and text_item["has_image"] is False
    batch = collate_batch([image_item, text_item], byte_tokenizer.pad_token_id, (16, 32))
    assert batch["has_image"].tolist() == [True, False]
    assert batch["image_features"][1].abs().sum() == 0  # text-only: zeros, ΔW = 0 downstream
    assert np.array_equal(
        batch["image_features"][0].numpy().reshape(-1), written["a.jpg"].astype(np.float32)
    )


def test_a_missing_image_is_reported_never_replaced(
    byte_tokenizer, tmp_path, write_features
) -> None:
    write_features(tmp_path / "f.parquet", ["a.jpg", "b.jpg"])
    records = [
        GOOD,
        rec("b", "<image>\nQ?", "B.", image="b.jpg"),
        rec("gone", "<image>\nQ?", "C.", image="coco/missing.jpg"),
    ]
    rows, report = sft_rows(
        records,
        byte_tokenizer,
        "vicuna_v1",
        [str(tmp_path / "f.parquet")],
        512,
        max_bad_fraction=0.5,
    )
    assert report.problems == {"image_missing": ["gone"]}
    assert report.details["gone"] == "image_missing: coco/missing.jpg"
    assert [r["id"] for r in rows] == ["ok-1", "b"]  # no blank-image stand-in
    assert report.total == 3


def test_straddling_tokens_are_counted_and_listed(straddling_tokenizer) -> None:
    # This tokenizer has one token for "…? ASSISTANT: Yes": prompt and answer in one token.
    tokens = straddling_tokenizer.tokenize("USER: Is it red? ASSISTANT: Yes")
    assert tokens == ["USER: Is it red? ASSISTANT: Yes"]
    template = get_template("vicuna_v1")
    records = [rec("yes", "Is it red?", "Yes"), rec("yes-2", "Is it red?", "Yes")]
    samples, report = build_sft_samples(records, straddling_tokenizer, template, None)
    assert samples == []
    assert report.problems == {"straddling_tokens": ["yes", "yes-2"]}
    assert report.details["yes"].startswith("straddling_tokens: ")


def test_round_trip_mismatches_are_counted_and_listed(no_fallback_tokenizer) -> None:
    # No byte fallback: "€" becomes <unk>, so the supervised tokens cannot give the answer back.
    template = get_template("vicuna_v1")
    records = [
        rec("fine", "What is it?", "A cat."),
        rec("euro", "What does it cost?", "It is 5 €."),
        rec("euro-2", "Cost?", "The cat.", "And now?", "The cat is 5 €."),
    ]
    samples, report = build_sft_samples(records, no_fallback_tokenizer, template, None)
    assert [s.id for s in samples] == ["fine"]
    assert report.problems == {"round_trip_mismatch": ["euro", "euro-2"]}
    assert "answer 1" in report.details["euro-2"]  # the second answer is the bad one


def test_truncation_keeps_what_fits_and_reports_what_cannot_train(byte_tokenizer) -> None:
    template = get_template("vicuna_v1")
    record = rec("long", "Q1?", "First answer.", "Q2?", "Second answer, rather long.", image="x")
    parsed = parse_record(record, 0)
    full, full_enc = tokenize_record(parsed, byte_tokenizer, template, None)
    cut_at = full_enc.span_positions[1][0] + 5  # inside the second answer
    sample, encoded = tokenize_record(parsed, byte_tokenizer, template, cut_at)
    assert sample.notes == ["truncated"] and len(sample.input_ids) == cut_at
    assert sample.input_ids == full.input_ids[:cut_at] and sample.labels == full.labels[:cut_at]
    spans = decode_supervised_spans(byte_tokenizer, encoded)
    assert spans == [" First answer.</s>", " Seco"]
    # Cut before the first answer: nothing to learn from → a listed problem, not a silent row.
    early = full_enc.span_positions[0][0] - 1
    problem, _ = tokenize_record(parsed, byte_tokenizer, template, early)
    assert isinstance(problem, RecordProblem)
    assert (problem.id, problem.reason) == ("long", "truncated_no_supervised")
    # The placeholder (after the system prompt) never disappears silently either.
    tiny = 3
    cut_image, _ = tokenize_record(parsed, byte_tokenizer, template, tiny)
    assert cut_image.reason == "truncated_no_supervised"


def test_build_fails_above_max_bad_fraction_listing_ids(
    byte_tokenizer, tmp_path, write_features
) -> None:
    write_features(tmp_path / "f.parquet", ["a.jpg"])
    records = [
        GOOD,
        rec("fine-text", "Hi", "Hello"),
        rec("bad-roles", "Hi", "Hello", roles=["gpt", "human"]),
        rec("no-img", "<image>\nQ", "A", image="nope.jpg"),
    ]
    files = [str(tmp_path / "f.parquet")]
    with pytest.raises(DataQualityError) as err:
        sft_rows(records, byte_tokenizer, "vicuna_v1", files, 512, max_bad_fraction=0.25)
    message = str(err.value)
    assert "2 of 4 records (50.00%)" in message and "max_bad_fraction=0.25" in message
    assert "not_alternating: 1 [bad-roles]" in message
    assert "image_missing: 1 [no-img]" in message
    rows, report = sft_rows(records, byte_tokenizer, "vicuna_v1", files, 512, max_bad_fraction=0.5)
    assert len(rows) == 2 and report.counts() == {"image_missing": 1, "not_alternating": 1}


def test_records_load_from_json_array_or_lines(tmp_path) -> None:
    array = tmp_path / "data.json"
    array.write_text(json.dumps([GOOD, GOOD]))
    lines = tmp_path / "data.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in [GOOD, GOOD]) + "\n")
    assert load_sft_records(array) == load_sft_records(lines) == [GOOD, GOOD]
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(ValueError, match="broken.json"):
        load_sft_records(broken)


def test_rows_match_the_feature_table(byte_tokenizer, tmp_path, write_features) -> None:
    written = {**write_features(tmp_path / "f0.parquet", ["a.jpg", "b.jpg"], seed=1)}
    written.update(write_features(tmp_path / "f1.parquet", ["c.jpg"], seed=2))
    files = [str(tmp_path / "f0.parquet"), str(tmp_path / "f1.parquet")]
    records = [
        rec(k, "<image>\nWhat?", f"It is {k}.", image=k) for k in ["c.jpg", "a.jpg", "b.jpg"]
    ]
    rows, _ = sft_rows(records, byte_tokenizer, "vicuna_v1", files, 512)
    for row, key in zip(rows, ["c.jpg", "a.jpg", "b.jpg"], strict=True):
        assert np.array_equal(row["features"], written[key])
        labels = row["labels"]
        assert byte_tokenizer.decode(labels[labels != IGNORE_INDEX]) == f" It is {key}.</s>"
