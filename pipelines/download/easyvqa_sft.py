"""LLaVA-format SFT conversations generated from easy-vqa's TRAIN split (never its test split).

One record per image, `turns_per_image` question/answer turns drawn (seeded) from the image's
own easy-vqa questions plus one "describe the image" request. With `yes_no: balanced` (the
default) every yes/no question keeps its phrasing but names the image's true colour or shape
with probability 1/2 (a seeded distractor otherwise), so its answer is yes or no equally often
for every phrasing: easy-vqa's own questions name a random value, which makes "is there a red
shape?" false 7 times in 8 and lets a model answer from the words alone. Like LLaVA-v1.5's VQA data, a
share of the questions ask for "a single word or phrase" (answer: the easy-vqa answer, e.g.
"Blue"); the others get a short, true sentence built from the image's shape and colour
("No. The image shows a red circle."). The first human turn starts with "<image>\\n".
Text-only records ask general questions about shapes and colours that need no image.
"""

from __future__ import annotations

import random
import re
from typing import Any

from pipelines.config.download import EasyVQASft
from pipelines.download import easyvqa
from pipelines.download.easyvqa import ImageFacts, Question

SPLIT = "train"
SINGLE_WORD = "Answer the question using a single word or phrase."
DESCRIBE = (
    "Describe the image briefly.",
    "What is shown in this picture?",
    "Give a short description of the image.",
)
TEXT_ONLY = (
    ("How many sides does a triangle have?", "A triangle has three sides."),
    ("How many corners does a rectangle have?", "A rectangle has four corners."),
    ("Does a circle have any corners?", "No, a circle has no corners."),
    ("What colour do you get by mixing blue and yellow paint?", "Green."),
    ("What colour do you get by mixing red and yellow paint?", "Orange."),
    ("Which two colours mix into teal?", "Blue and green."),
    ("Is gray between black and white?", "Yes, gray is a mix of black and white."),
    ("What shape is a coin usually?", "A coin is usually a circle."),
    ("What shape is a door usually?", "A door is usually a rectangle."),
    ("What shape has three corners?", "A triangle."),
    ("Is a square a kind of rectangle?", "Yes, a square is a rectangle with equal sides."),
    ("What colour is the sky on a clear day?", "Blue."),
    ("What colour is a ripe banana?", "Yellow."),
    ("Which colour absorbs the most light?", "Black."),
    ("How many degrees do the angles of a triangle add up to?", "180 degrees."),
    ("What do you call the distance around a circle?", "Its circumference."),
)


_NEGATION_RE = re.compile(r"\b(not|no)\b")


def balanced_yes_no(q: Question, facts: ImageFacts, rng: random.Random) -> Question:
    """The same phrasing, naming the true value or a distractor with equal probability.

    Questions that name neither exactly one colour nor exactly one shape stay as asked.
    """
    words = re.findall(r"[a-z]+", q.text)
    colors = [w for w in words if w in easyvqa.PALETTE]
    shapes = [w for w in words if w in easyvqa.SHAPES]
    if len(colors) + len(shapes) != 1:
        return q
    named, truth, choices = (
        (colors[0], facts.color, tuple(easyvqa.PALETTE))
        if colors
        else (shapes[0], facts.shape, easyvqa.SHAPES)
    )
    value = truth if rng.random() < 0.5 else rng.choice([c for c in choices if c != truth])
    text = re.sub(rf"\b{named}\b", value, q.text)
    present = (value == truth) != (_NEGATION_RE.search(q.text) is not None)
    return Question(text, "yes" if present else "no", q.image_id)


def _question_text(q: Question) -> str:
    return q.text[:1].upper() + q.text[1:]


def sentence_answer(q: Question, facts: ImageFacts, yes_no_order: str = "answer_first") -> str:
    if q.answer in easyvqa.SHAPES:
        return f"The shape is a {q.answer}."
    if q.answer in easyvqa.PALETTE:
        return f"The {facts.shape} is {q.answer}."
    if yes_no_order == "describe_first":
        return f"The image shows a {facts.color} {facts.shape}, so {q.answer}."
    return f"{q.answer.capitalize()}. The image shows a {facts.color} {facts.shape}."


def description(facts: ImageFacts) -> str:
    return f"The image shows a {facts.color} {facts.shape} on a light background."


def image_record(
    facts: ImageFacts, qs: list[Question], cfg: EasyVQASft, rng: random.Random
) -> dict[str, Any]:
    if cfg.yes_no == "balanced":
        qs = [balanced_yes_no(q, facts, rng) if q.answer in ("yes", "no") else q for q in qs]
    pool: list[Question | None] = [*qs, None]  # None: the "describe" request
    rng.shuffle(pool)
    conversations: list[dict[str, str]] = []
    for item in pool[: cfg.turns_per_image]:
        if item is None:
            human, gpt = rng.choice(DESCRIBE), description(facts)
        elif rng.random() < cfg.single_word_fraction:
            human, gpt = f"{_question_text(item)}\n{SINGLE_WORD}", item.answer.capitalize()
        else:
            human, gpt = _question_text(item), sentence_answer(item, facts, cfg.yes_no_order)
        if not conversations:
            human = f"<image>\n{human}"
        conversations += [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]
    return {
        "id": f"easyvqa-{SPLIT}-{facts.image_id:05d}",
        "image": easyvqa.image_path(SPLIT, facts.image_id),
        "conversations": conversations,
    }


def text_only_record(index: int, rng: random.Random) -> dict[str, Any]:
    pairs = rng.sample(TEXT_ONLY, k=rng.choice((1, 2)))
    conversations = []
    for question, answer in pairs:
        conversations += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return {"id": f"easyvqa-text-{index:05d}", "conversations": conversations}


def build_conversations(cfg: EasyVQASft, seed: int) -> tuple[list[dict[str, Any]], list[int], dict]:
    """(records, train image ids used, counts of where captions came from)."""
    rng = random.Random(seed)
    all_ids = list(easyvqa.image_ids(SPLIT))
    ids = sorted(rng.sample(all_ids, k=min(cfg.images, len(all_ids))))
    facts, counts = easyvqa.image_facts(SPLIT, ids)
    grouped = easyvqa.questions_by_image(SPLIT)
    records = [image_record(facts[i], grouped.get(i, []), cfg, rng) for i in ids]
    records += [text_only_record(i, rng) for i in range(cfg.text_only_records)]
    return records, ids, dict(counts)
