"""Local benchmarks built from the easy-vqa test split (PyPI ``easy-vqa``, MIT), for offline runs.

easy-vqa has 1,000 test images (64 px, one coloured shape each) with 9,673 questions over 13
answers (yes/no, 3 shapes, 8 colours). Two files, both in the VLMEvalKit TSV format that
:mod:`vlora.eval.tsv` reads and the registered scorers score:

* ``EasyVQA_TEST`` (exact match): every test question of the chosen images, as asked by easy-vqa
  (``index, image, question, answer, category, image_path``); ``category`` is the answer type
  (``yes/no``, ``shape``, ``color``). The first question of an image carries the base64 PNG, the
  others refer to its ``index`` (VLMEvalKit's image de-duplication).
* ``EasyVQA_YORN`` (MME scorer): per image, two MME-style pairs of yes/no questions with the
  MME suffix " Please answer yes or no.": subtask ``color`` ("Is there a {colour} shape in the
  image?", once with the true colour → Yes, once with another colour → No) and subtask
  ``shape`` ("Is there a {shape} in the image?", same scheme). The two questions of a pair share
  ``image_path`` (``color/17.png``), so MME's acc+ (both questions right) is meaningful; Yes comes
  first as in MME. Distractors are drawn with a seeded RNG per image, so the file is reproducible.
  Score = acc + acc+ per subtask, both subtasks count as perception (max 400).

The true colour and shape of an image come from easy-vqa's own answers: a "what shape/colour"
answer, or a yes/no question that asserts a shape/colour is present ("yes" to a plain question,
"no" to a negated one). Images whose questions never state one of the two facts, or state two
different values, are left out of ``EasyVQA_YORN`` and counted by reason in the build report.

Images are the first ``images`` test image ids in ascending order (all 1,000 by default).
"""

from __future__ import annotations

import base64
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlora.eval.tsv import write_benchmark_tsv

EASYVQA_SHAPES = ("circle", "rectangle", "triangle")
EASYVQA_COLORS = ("black", "blue", "brown", "gray", "green", "red", "teal", "yellow")
YES_NO_SUFFIX = " Please answer yes or no."
EASYVQA_TEST_COLUMNS = ("index", "image", "question", "answer", "category", "image_path")
EASYVQA_YORN_COLUMNS = ("index", "image", "question", "answer", "category", "image_path")
# Bump when the content of a built file changes for the same arguments (part of cache keys).
BUILDER_VERSION = 1

_WORD_RE = re.compile(r"[a-z]+")
_NEGATION_RE = re.compile(r"\b(not|no)\b")


@dataclass(frozen=True)
class EasyVQAQuestion:
    text: str
    answer: str
    image_id: int


@dataclass
class LocalBenchmarkBuild:
    """What a builder wrote: the file, its row/image counts and images left out by reason."""

    key: str
    path: Path
    rows: int
    images: int
    skipped_images: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "path": str(self.path),
            "rows": self.rows,
            "images": self.images,
            "skipped_images": dict(self.skipped_images),
            "builder_version": BUILDER_VERSION,
        }


def _easy_vqa_root() -> Path:
    try:
        import easy_vqa
    except ImportError as exc:  # an optional dependency (extra "offline-models")
        raise ImportError(
            "the local easy-vqa benchmarks need the 'easy-vqa' package (pip install easy-vqa)"
        ) from exc
    return Path(easy_vqa.__file__).resolve().parent


def easyvqa_test_questions() -> list[EasyVQAQuestion]:
    """All easy-vqa test questions, in the package's order."""
    import easy_vqa

    _easy_vqa_root()
    texts, answers, ids = easy_vqa.get_test_questions()
    return [EasyVQAQuestion(t, a, int(i)) for t, a, i in zip(texts, answers, ids, strict=True)]


def easyvqa_image_path(image_id: int) -> Path:
    """The installed PNG of a test image."""
    return _easy_vqa_root() / "data" / "test" / "images" / f"{image_id}.png"


def _image_base64(image_id: int) -> str:
    # The package's PNG bytes as they are: no re-encoding, so the pixels are exactly easy-vqa's.
    return base64.b64encode(easyvqa_image_path(image_id).read_bytes()).decode("ascii")


def select_image_ids(questions: list[EasyVQAQuestion], images: int | None) -> list[int]:
    """The first ``images`` image ids (ascending) among those with questions; all when None."""
    ids = sorted({q.image_id for q in questions})
    if images is not None:
        if images <= 0:
            raise ValueError(f"images must be positive, got {images}")
        ids = ids[:images]
    return ids


def answer_type(answer: str) -> str:
    """``yes/no``, ``shape`` or ``color``: the category of an EasyVQA_TEST row."""
    if answer in ("yes", "no"):
        return "yes/no"
    if answer in EASYVQA_SHAPES:
        return "shape"
    if answer in EASYVQA_COLORS:
        return "color"
    raise ValueError(f"unexpected easy-vqa answer {answer!r}")


def stated_facts(question: EasyVQAQuestion) -> dict[str, str]:
    """Shape/colour that one question and its answer state to be in the image (maybe none)."""
    words = set(_WORD_RE.findall(question.text.lower()))
    named_shapes = [s for s in EASYVQA_SHAPES if s in words]
    named_colors = [c for c in EASYVQA_COLORS if c in words]
    facts: dict[str, str] = {}
    if question.answer in EASYVQA_SHAPES or question.answer in EASYVQA_COLORS:
        kind = "shape" if question.answer in EASYVQA_SHAPES else "color"
        facts[kind] = question.answer
        # "what is the red shape?" → triangle also says the shape is red (and vice versa).
        other = named_colors if kind == "shape" else named_shapes
        if len(other) == 1:
            facts["color" if kind == "shape" else "shape"] = other[0]
    elif question.answer in ("yes", "no"):
        negated = _NEGATION_RE.search(question.text.lower()) is not None
        if (question.answer == "yes") != negated:  # the named shape/colour is present
            if len(named_shapes) == 1:
                facts["shape"] = named_shapes[0]
            if len(named_colors) == 1:
                facts["color"] = named_colors[0]
    return facts


def image_facts(
    questions: list[EasyVQAQuestion],
) -> tuple[dict[int, dict[str, str]], dict[int, str]]:
    """Per image, its shape and colour; and per image left out, why (``conflicting_<kind>``)."""
    seen: dict[int, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for question in questions:
        for kind, value in stated_facts(question).items():
            seen[question.image_id][kind].add(value)
    facts: dict[int, dict[str, str]] = {}
    problems: dict[int, str] = {}
    for image_id, kinds in seen.items():
        conflicts = [kind for kind in ("shape", "color") if len(kinds[kind]) > 1]
        if conflicts:
            problems[image_id] = f"conflicting_{conflicts[0]}"
            continue
        facts[image_id] = {kind: next(iter(values)) for kind, values in kinds.items() if values}
    return facts, problems


def build_easyvqa_test(path: str | Path, *, images: int | None = None) -> LocalBenchmarkBuild:
    """Write ``EasyVQA_TEST``: every test question of the chosen images (see module docstring)."""
    questions = easyvqa_test_questions()
    chosen = set(select_image_ids(questions, images))
    records: list[dict[str, object]] = []
    first_row_of_image: dict[int, int] = {}
    for question in questions:
        if question.image_id not in chosen:
            continue
        index = len(records)
        if question.image_id in first_row_of_image:
            image: str = str(first_row_of_image[question.image_id])  # VLMEvalKit back-reference
        else:
            first_row_of_image[question.image_id] = index
            image = _image_base64(question.image_id)
        records.append(
            {
                "index": index,
                "image": image,
                "question": question.text,
                "answer": question.answer,
                "category": answer_type(question.answer),
                "image_path": f"test/{question.image_id}.png",
            }
        )
    out = write_benchmark_tsv(path, EASYVQA_TEST_COLUMNS, records)
    return LocalBenchmarkBuild("EasyVQA_TEST", out, len(records), len(first_row_of_image))


def _yes_no_pair(
    category: str, truth: str, choices: tuple[str, ...], rng: random.Random
) -> list[tuple[str, str]]:
    """(question, answer) for the true value (Yes) and a seeded distractor (No)."""
    distractor = rng.choice([value for value in choices if value != truth])
    if category == "color":
        template = "Is there a {} shape in the image?"
    else:
        template = "Is there a {} in the image?"
    return [
        (template.format(truth) + YES_NO_SUFFIX, "Yes"),
        (template.format(distractor) + YES_NO_SUFFIX, "No"),
    ]


def build_easyvqa_yorn(
    path: str | Path, *, images: int | None = None, seed: int = 0
) -> LocalBenchmarkBuild:
    """Write ``EasyVQA_YORN``: a colour pair and a shape pair per image (see module docstring)."""
    questions = easyvqa_test_questions()
    ids = select_image_ids(questions, images)
    facts, problems = image_facts(questions)
    skipped: Counter[str] = Counter()
    records: list[dict[str, object]] = []
    used_images = 0
    for image_id in ids:
        if image_id in problems:
            skipped[problems[image_id]] += 1
            continue
        known = facts.get(image_id, {})
        missing = [kind for kind in ("color", "shape") if kind not in known]
        if missing:
            skipped[f"no_{missing[0]}_stated"] += 1
            continue
        rng = random.Random(f"{seed}:{image_id}")
        first_index = len(records)
        for category, choices in (("color", EASYVQA_COLORS), ("shape", EASYVQA_SHAPES)):
            for question, answer in _yes_no_pair(category, known[category], choices, rng):
                index = len(records)
                records.append(
                    {
                        "index": index,
                        "image": _image_base64(image_id)
                        if index == first_index
                        else str(first_index),
                        "question": question,
                        "answer": answer,
                        "category": category,
                        "image_path": f"{category}/{image_id}.png",
                    }
                )
        used_images += 1
    if not records:
        raise ValueError(f"no easy-vqa test image among the first {len(ids)} has both facts")
    out = write_benchmark_tsv(path, EASYVQA_YORN_COLUMNS, records)
    return LocalBenchmarkBuild("EasyVQA_YORN", out, len(records), used_images, dict(skipped))


LOCAL_BUILDERS: dict[str, Callable[..., LocalBenchmarkBuild]] = {
    "EasyVQA_TEST": build_easyvqa_test,
    "EasyVQA_YORN": build_easyvqa_yorn,
}


def build_local_benchmark(
    key: str, path: str | Path, *, images: int | None = None
) -> LocalBenchmarkBuild:
    """Build the local benchmark ``key`` into ``path`` (a ``.tsv`` file)."""
    if key not in LOCAL_BUILDERS:
        raise KeyError(f"{key!r} is not a local benchmark; local: {', '.join(LOCAL_BUILDERS)}")
    return LOCAL_BUILDERS[key](path, images=images)
