"""easy-vqa → CapsFusion-style URL list (captions from its answers) and LLaVA SFT data."""

from __future__ import annotations

import json
import random
import re
import urllib.request
from pathlib import Path

from pipelines.config.download import EasyVQASft
from pipelines.download import easyvqa
from pipelines.download.easyvqa_sft import SINGLE_WORD, build_conversations
from pipelines.download.loopback import LoopbackImageServer, live_url
from pipelines.download.sft import prepare_sft

ANSWERS = set(easyvqa.SHAPES) | set(easyvqa.PALETTE) | {"yes", "no"}


def test_split_sizes_are_the_published_ones() -> None:
    assert len(easyvqa.image_ids("train")) == 4000
    assert len(easyvqa.image_ids("test")) == 1000
    assert len(easyvqa.questions("train")) == 38575


def test_pixel_facts_agree_with_every_answer_that_states_them() -> None:
    grouped = easyvqa.questions_by_image("test")
    checked = 0
    for image_id in easyvqa.image_ids("test")[:300]:
        shape, color = easyvqa.facts_from_pixels(easyvqa.image_folder("test") / f"{image_id}.png")
        stated_shape, stated_color = easyvqa.facts_from_questions(grouped[image_id])
        assert stated_shape in (None, shape) and stated_color in (None, color), image_id
        checked += stated_shape is not None
    assert checked > 250


def test_url_table_has_informative_captions_from_the_train_split() -> None:
    ids = [0, 1, 2, 3, 17]
    table, counts = easyvqa.url_table(ids, "train")
    assert table.column_names == ["url", "laion_2b", "laion_coco", "capsfusion", "source_index"]
    assert table.column("url").to_pylist()[0] == "http://loopback.invalid/easyvqa/train/0.png"
    # image 0: "what is the blue shape?" → rectangle; image 3: "what color is the rectangle?" → brown
    assert table.column("capsfusion").to_pylist()[0] == "a blue rectangle."
    assert table.column("capsfusion").to_pylist()[3] == "a brown rectangle."
    assert table.column("laion_2b").to_pylist()[3] == "brown rectangle"
    assert table.column("source_index").to_pylist() == ids
    assert sum(counts.values()) <= len(ids) * 2


def test_served_urls_return_the_image_bytes() -> None:
    table, _ = easyvqa.url_table([5], "train")
    with LoopbackImageServer(folders=easyvqa.served_folders("train")) as server:
        url = live_url(table.column("url")[0].as_py(), server.base_url)
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read()
    assert body == (easyvqa.image_folder("train") / "5.png").read_bytes()


def test_sft_conversations_counts_turns_and_split() -> None:
    cfg = EasyVQASft(images=20, turns_per_image=3, text_only_records=5)
    records, ids, _ = build_conversations(cfg, seed=0)
    assert len(records) == 25 and len(ids) == 20
    assert set(ids) <= set(easyvqa.image_ids("train"))
    grouped = easyvqa.questions_by_image("train")
    image_records = [r for r in records if "image" in r]
    assert len(image_records) == 20
    for record, image_id in zip(image_records, ids, strict=True):
        assert record["image"] == f"easyvqa/train/{image_id}.png"
        turns = record["conversations"]
        assert len(turns) == 2 * min(3, len(grouped[image_id]) + 1)
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns[0]["value"].startswith("<image>\n")
        assert sum("<image>" in t["value"] for t in turns) == 1
    text_only = [r for r in records if "image" not in r]
    assert len(text_only) == 5 and all(r["id"].startswith("easyvqa-text-") for r in text_only)
    assert records == build_conversations(cfg, seed=0)[0]  # seeded: stable
    assert records != build_conversations(cfg, seed=1)[0]


def test_single_word_and_sentence_answers() -> None:
    words, _, _ = build_conversations(
        EasyVQASft(images=10, single_word_fraction=1.0, text_only_records=0), 0
    )
    sentences, _, _ = build_conversations(
        EasyVQASft(images=10, single_word_fraction=0.0, text_only_records=0), 0
    )
    for record in words:
        turns = record["conversations"]
        for human, gpt in zip(turns[::2], turns[1::2], strict=True):
            if SINGLE_WORD in human["value"]:
                assert gpt["value"].lower() in ANSWERS
            else:  # the "describe the image" turn
                assert gpt["value"].startswith("The image shows a ")
    answers = [t["value"] for r in sentences for t in r["conversations"][1::2]]
    assert all(a.endswith(".") and " " in a for a in answers)
    assert not any(SINGLE_WORD in t["value"] for r in sentences for t in r["conversations"])


def test_prepared_sft_copies_train_images_only(tmp_path) -> None:
    cfg = EasyVQASft(images=12, turns_per_image=2, text_only_records=3)
    data = prepare_sft(cfg, seed=0, folder=str(tmp_path), threads=2)
    records = json.loads(Path(data.json_path).read_text())
    assert data.summary["records"] == 15
    assert data.summary["image_records"] == 12 and data.summary["text_only_records"] == 3
    assert data.summary["split"] == "train" and data.summary["images"] == 12
    copied = sorted(Path(data.images_folder).rglob("*.png"))
    assert len(copied) == 12
    for record in records:
        if "image" in record:
            image = Path(data.images_folder) / record["image"]
            image_id = int(image.stem)
            assert (
                image.read_bytes()
                == (easyvqa.image_folder("train") / f"{image_id}.png").read_bytes()
            )
    assert not any("test" in str(p.relative_to(data.images_folder)) for p in copied)


def _yes_no_turns(records: list[dict]) -> list[tuple[str, str]]:
    pairs = []
    for record in records:
        turns = record["conversations"]
        for human, gpt in zip(turns[::2], turns[1::2], strict=True):
            answer = gpt["value"].split(".")[0].lower()
            if answer in ("yes", "no"):
                question = human["value"].removeprefix("<image>\n").split("\n")[0].lower()
                pairs.append((question, answer))
    return pairs


def test_balanced_yes_no_answers_are_not_given_away_by_the_phrasing() -> None:
    def polarity_counts(yes_no: str) -> dict[tuple[bool, str], int]:
        cfg = EasyVQASft(images=400, turns_per_image=6, text_only_records=0, yes_no=yes_no)
        records, _, _ = build_conversations(cfg, seed=0)
        counts: dict[tuple[bool, str], int] = {}
        for question, answer in _yes_no_turns(records):
            key = (re.search(r"\b(not|no)\b", question) is not None, answer)
            counts[key] = counts.get(key, 0) + 1
        return counts

    def share_no_when_positive(counts) -> float:
        return counts[(False, "no")] / (counts[(False, "no")] + counts[(False, "yes")])

    # easy-vqa as asked: a positive question is answered "no" about 4 times in 5
    assert share_no_when_positive(polarity_counts("as_asked")) > 0.75
    balanced = polarity_counts("balanced")
    assert 0.4 < share_no_when_positive(balanced) < 0.6
    negated_yes = balanced[(True, "yes")] / (balanced[(True, "yes")] + balanced[(True, "no")])
    assert 0.4 < negated_yes < 0.6


def test_balanced_yes_no_answers_are_true_of_the_image() -> None:
    from pipelines.download.easyvqa_sft import balanced_yes_no

    facts = easyvqa.ImageFacts(7, "circle", "red")
    rng = random.Random(0)
    seen = set()
    for text in ("is there a blue shape?", "is there not a triangle in the image?"):
        for _ in range(40):
            q = balanced_yes_no(easyvqa.Question(text, "no", 7), facts, rng)
            named = "red" in q.text or "circle" in q.text
            negated = " not " in q.text
            assert q.answer == ("yes" if named != negated else "no"), q
            seen.add((text, q.answer))
    assert len(seen) == 4  # both answers for both phrasings
    two_values = easyvqa.Question("is the red shape a circle?", "yes", 7)
    assert balanced_yes_no(two_values, facts, rng) == two_values  # left as asked


def test_describe_first_yes_no_sentences_end_with_the_answer() -> None:
    cfg = EasyVQASft(images=40, single_word_fraction=0.0, text_only_records=0)
    records, _, _ = build_conversations(
        cfg.model_copy(update={"yes_no_order": "describe_first"}), 0
    )
    answers = [t["value"] for r in records for t in r["conversations"][1::2]]
    yes_no = [a for a in answers if a.endswith((", so yes.", ", so no."))]
    assert yes_no and all(a.startswith("The image shows a ") for a in yes_no)
    assert not any(a.startswith(("Yes.", "No.")) for a in answers)


def test_new_sft_field_at_its_default_keeps_the_download_key() -> None:
    from pipelines.config import load_pipeline_config
    from pipelines.download.stage import key_config

    default = load_pipeline_config("local")
    assert "yes_no_order" not in key_config(default)["download"]["sft"]
    changed = load_pipeline_config("local", ["download.sft.yes_no_order=describe_first"])
    assert key_config(changed) != key_config(default)
