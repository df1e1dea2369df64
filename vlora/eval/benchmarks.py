"""Registry of the benchmarks we can load and score: key → :class:`BenchmarkSpec`.

Keys follow VLMEvalKit's dataset names so that a file ``$LMUData/<KEY>.tsv`` can be scored by
either toolkit. A spec is a small declarative record; the behaviour lives in ``prompts``,
``extraction`` and the ``metrics_*`` modules, selected by the spec's fields.

Local benchmarks (for the offline default run):

* ``EasyVQA_TEST``: a VLMEvalKit-style TSV (``index, image, question, answer[, category]``) built
  from the easy-vqa test split; scored by exact match of a one-word answer.
* ``EasyVQA_YORN``: any MME-format yes/no TSV (``index, image, question, answer ∈ {Yes, No},
  category[, image_path]``), e.g. generated from easy-vqa test images; scored by the MME scorer
  (acc + acc+ per category). Its categories are free-form and all count towards ``perception``,
  except the four MME cognition names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vlora.eval.errors import UnknownBenchmarkError

ScorerKind = Literal["mcq", "mmmu", "mme", "hallusion", "exact_match"]
PromptKind = Literal["mcq", "yorn", "short_answer"]
LmmsPromptKind = Literal[
    "mmbench_en", "mmbench_cc", "mme", "scienceqa", "hallusion", "mmmu", "short_answer"
]

# MME subtasks (VLMEvalKit utils/yorn.py MME_rating, lmms-eval tasks/mme/utils.py).
MME_PERCEPTION_SUBTASKS = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
MME_COGNITION_SUBTASKS = (
    "commonsense_reasoning",
    "numerical_calculation",
    "text_translation",
    "code_reasoning",
)


@dataclass(frozen=True)
class BenchmarkSpec:
    """How one benchmark is loaded, prompted and scored.

    Attributes:
        key: registry key (VLMEvalKit dataset name for the paper's benchmarks).
        scorer: which metric family scores it.
        prompt_kind: VLMEvalKit LLaVA prompt family (MCQ custom prompt, Y/N as-is, short answer).
        lmms_prompt: which lmms-eval ``doc_to_text`` variant applies.
        required_columns: header columns that must exist to score the file.
        circular: default CircularEval for MCQ (MMBench/CCBench); vanilla otherwise.
        report_split: the ``split`` value whose accuracy is reported as ``Overall`` when the file
            has a ``split`` column holding it (MMMU_DEV_VAL → ``validation``).
        strict_mme_categories: MME only: every category must be one of the 14 MME subtasks.
        md5_vlora_era / md5_current: TSV md5 of the May-2024 file and of the current one.
        lmms_task: the lmms-eval task name of the same benchmark, for cross-checks.
        description: one line for listings.
    """

    key: str
    scorer: ScorerKind
    prompt_kind: PromptKind
    lmms_prompt: LmmsPromptKind
    required_columns: tuple[str, ...]
    circular: bool = False
    report_split: str | None = None
    strict_mme_categories: bool = False
    md5_vlora_era: str | None = None
    md5_current: str | None = None
    lmms_task: str | None = None
    description: str = ""


_MCQ_COLUMNS = ("index", "question", "answer", "A", "B")

_SPECS: tuple[BenchmarkSpec, ...] = (
    BenchmarkSpec(
        key="MMBench_DEV_EN",
        scorer="mcq",
        prompt_kind="mcq",
        lmms_prompt="mmbench_en",
        required_columns=(*_MCQ_COLUMNS, "image"),
        circular=True,
        report_split="dev",
        md5_vlora_era="b6caf1133a01c6bb705cf753bb527ed8",
        md5_current="b6caf1133a01c6bb705cf753bb527ed8",
        lmms_task="mmbench_en_dev",
        description="MMBench dev (English), CircularEval over rotated copies",
    ),
    BenchmarkSpec(
        key="CCBench",
        scorer="mcq",
        prompt_kind="mcq",
        lmms_prompt="mmbench_cc",
        required_columns=(*_MCQ_COLUMNS, "image"),
        circular=True,
        md5_vlora_era="1de88b4257e7eee3f60b18d45eda6f07",
        md5_current="f5dde47f24dc5a6fb6e595b409b466ac",
        lmms_task="mmbench_cn_cc",
        description="CCBench (Chinese culture), CircularEval",
    ),
    BenchmarkSpec(
        key="MME",
        scorer="mme",
        prompt_kind="yorn",
        lmms_prompt="mme",
        required_columns=("index", "image", "question", "answer", "category"),
        strict_mme_categories=True,
        md5_vlora_era="b36b43c3f09801f5d368627fb92187c3",
        md5_current="b36b43c3f09801f5d368627fb92187c3",
        lmms_task="mme",
        description="MME yes/no: perception and cognition, acc + acc+ per subtask",
    ),
    BenchmarkSpec(
        key="ScienceQA_TEST",
        scorer="mcq",
        prompt_kind="mcq",
        lmms_prompt="scienceqa",
        required_columns=(*_MCQ_COLUMNS, "image"),
        md5_vlora_era="e42e9e00f9c59a80d8a5db35bc32b71f",
        md5_current="e42e9e00f9c59a80d8a5db35bc32b71f",
        lmms_task="scienceqa_img",
        description="ScienceQA test, image subset (2017 questions), vanilla accuracy",
    ),
    BenchmarkSpec(
        key="ScienceQA_VAL",
        scorer="mcq",
        prompt_kind="mcq",
        lmms_prompt="scienceqa",
        required_columns=(*_MCQ_COLUMNS, "image"),
        md5_vlora_era="96320d05e142e585e7204e72affd29f3",
        md5_current="96320d05e142e585e7204e72affd29f3",
        description="ScienceQA validation, image subset, vanilla accuracy",
    ),
    BenchmarkSpec(
        key="HallusionBench",
        scorer="hallusion",
        prompt_kind="yorn",
        lmms_prompt="hallusion",
        required_columns=("index", "image", "question", "answer", "l2-category"),
        md5_vlora_era="0c23ac0dc9ef46832d7a24504f2a0c7c",
        md5_current="0c23ac0dc9ef46832d7a24504f2a0c7c",
        lmms_task="hallusion_bench_image",
        description="HallusionBench yes/no: aAcc, fAcc, qAcc and their mean",
    ),
    BenchmarkSpec(
        key="MMMU_DEV_VAL",
        scorer="mmmu",
        prompt_kind="mcq",
        lmms_prompt="mmmu",
        required_columns=("index", "question", "answer", "A", "B", "image"),
        report_split="validation",
        md5_vlora_era="521afc0f3bf341e6654327792781644d",
        md5_current="585e8ad75e73f75dcad265dfd0417d64",
        lmms_task="mmmu_val",
        description="MMMU dev+val; Overall = validation split; open questions as 2-way MCQ",
    ),
    BenchmarkSpec(
        key="EasyVQA_TEST",
        scorer="exact_match",
        prompt_kind="short_answer",
        lmms_prompt="short_answer",
        required_columns=("index", "image", "question", "answer"),
        description="local: easy-vqa test split, exact match of a one-word answer",
    ),
    BenchmarkSpec(
        key="EasyVQA_YORN",
        scorer="mme",
        prompt_kind="yorn",
        lmms_prompt="mme",
        required_columns=("index", "image", "question", "answer", "category"),
        description="local: MME-format yes/no file (e.g. from easy-vqa images), MME scorer",
    ),
)

BENCHMARKS: dict[str, BenchmarkSpec] = {spec.key: spec for spec in _SPECS}


def benchmark_keys() -> list[str]:
    """All registered keys, in registry order."""
    return list(BENCHMARKS)


def get_benchmark(key: str) -> BenchmarkSpec:
    """The spec of ``key``; raises :class:`UnknownBenchmarkError` listing the valid keys."""
    try:
        return BENCHMARKS[key]
    except KeyError:
        raise UnknownBenchmarkError(
            f"unknown benchmark {key!r}; valid keys: {', '.join(benchmark_keys())}"
        ) from None
