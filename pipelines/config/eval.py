"""Config of the eval stage: benchmarks, prompts, batched greedy generation on Ray Data actors,
scoring. Owner: eval. Field descriptions are the help text; see docs/evaluation.md."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipelines.config.base import StageConfig

LOCAL_BENCHMARKS = ("EasyVQA_TEST", "EasyVQA_YORN")
PromptWrappingName = Literal["model", "vlmevalkit-2024", "vlmevalkit-2024-07", "lmms-eval"]


class BenchmarkEntry(StageConfig):
    key: str = Field(
        description="Benchmark key (VLMEvalKit dataset name): MMBench_DEV_EN, MME, "
        "ScienceQA_TEST, ScienceQA_VAL, HallusionBench, MMMU_DEV_VAL, CCBench, or the local "
        "EasyVQA_TEST / EasyVQA_YORN."
    )
    data: str | None = Field(
        default=None,
        description="The benchmark TSV (VLMEvalKit format): a local path or any fsspec URL. "
        "Required except for the local EasyVQA_* benchmarks, which are built from the easy-vqa "
        "test split when it is None.",
    )
    images: int | None = Field(
        default=None,
        gt=0,
        description="Local EasyVQA_* built-ins only: how many easy-vqa test images to use (the "
        "first N ids; None = all 1,000).",
    )
    limit: int | None = Field(
        default=None, gt=0, description="Max rows of this benchmark (overrides eval.limit)."
    )
    max_new_tokens: int | None = Field(
        default=None, gt=0, description="Answer budget for this benchmark (overrides the type's)."
    )

    @field_validator("key")
    @classmethod
    def _known_key(cls, key: str) -> str:
        from vlora.eval.benchmarks import benchmark_keys

        if key not in benchmark_keys():
            raise ValueError(f"unknown benchmark {key!r}; valid: {', '.join(benchmark_keys())}")
        return key

    @model_validator(mode="after")
    def _data_or_builtin(self) -> BenchmarkEntry:
        if self.data is None and self.key not in LOCAL_BENCHMARKS:
            raise ValueError(
                f"data: required for {self.key} (a VLMEvalKit TSV path or URL); only "
                f"{', '.join(LOCAL_BENCHMARKS)} can be built locally"
            )
        if self.images is not None and (self.key not in LOCAL_BENCHMARKS or self.data):
            raise ValueError("images: only for a local EasyVQA_* benchmark built from easy-vqa")
        return self


class MaxNewTokens(StageConfig):
    mcq: int = Field(
        default=32,
        gt=0,
        description="Multiple choice (MMBench, CCBench, ScienceQA, MMMU): a letter is expected. "
        "VLMEvalKit allowed 512; a model that rambles past the budget is cut and may be "
        "unresolved (counted).",
    )
    yorn: int = Field(default=32, gt=0, description="Yes/no (MME, HallusionBench, EasyVQA_YORN).")
    short_answer: int = Field(default=16, gt=0, description="One word or phrase (EasyVQA_TEST).")


class ScoringConfig(StageConfig):
    matcher: Literal["2024", "head"] = Field(
        default="2024", description="MCQ answer matching: VLoRA-era VLMEvalKit or its later rules."
    )
    circular: bool | None = Field(
        default=None,
        description="Force CircularEval on/off for MCQ; None = the benchmark's default (on for "
        "MMBench and CCBench).",
    )
    mmmu_parser: Literal["vlmevalkit", "official"] = Field(
        default="vlmevalkit", description="MMMU: open questions as 2-way MCQ, or the MMMU parser."
    )
    yes_no_parser: Literal["vlmevalkit", "lmms-eval"] = Field(
        default="vlmevalkit", description="Yes/no extraction rules."
    )
    seed: int = Field(default=0, description="Seed of the official MMMU parser's random fallback.")
    na_mode: Literal["pandas", "empty"] = Field(
        default="pandas",
        description="Which TSV cells are missing: pandas NaN strings (VLMEvalKit) or empty only.",
    )


def _default_benchmarks() -> list[BenchmarkEntry]:
    return [BenchmarkEntry(key=key) for key in LOCAL_BENCHMARKS]


class EvalConfig(StageConfig):
    checkpoint: str | None = Field(
        default=None,
        description="Model folder (save_pretrained; local path or fsspec URL) to evaluate instead "
        "of the sft stage's export. When set, the sft stage is not needed.",
    )
    benchmarks: list[BenchmarkEntry] = Field(
        default_factory=_default_benchmarks,
        min_length=1,
        description="Benchmarks to run, in order; each finished one is kept on a rerun.",
    )
    limit: int | None = Field(
        default=None,
        gt=0,
        description="Max rows per benchmark (smoke runs). Whole scoring groups are kept: "
        "circular copies of a question, the two questions of an MME image, a HallusionBench set.",
    )
    max_new_tokens: MaxNewTokens = Field(
        default_factory=MaxNewTokens, description="Answer budgets by benchmark type."
    )
    prompt_content: Literal["vlmevalkit", "lmms-eval"] = Field(
        default="vlmevalkit", description="Prompt text: VLMEvalKit's LLaVA prompts or lmms-eval's."
    )
    prompt_wrapping: PromptWrappingName = Field(
        default="model",
        description="'model': the prompt (image placeholder + text) as the user turn of the "
        "checkpoint's own template (vicuna_v1 for the paper's model); 'vlmevalkit-2024' / "
        "'vlmevalkit-2024-07' / 'lmms-eval': the toolkit's literal vicuna string, byte for byte "
        "(meaningful for vicuna_v1 models only).",
    )
    scoring: ScoringConfig = Field(
        default_factory=ScoringConfig, description="How answers are extracted and scored."
    )
    batch_size: int = Field(default=8, gt=0, description="Prompts per generation batch.")
    num_actors: int = Field(default=1, gt=0, description="Ray Data generation actors.")
    cpus_per_actor: float = Field(
        default=1.0,
        gt=0,
        description="CPUs reserved per actor (fractional is fine; leave room for Ray Data's "
        "other tasks on small machines).",
    )
    gpus_per_actor: float = Field(
        default=0.0, ge=0, description="GPUs per actor (1 on a GPU cluster; 0 = CPU)."
    )
    torch_threads: int | None = Field(
        default=None,
        gt=0,
        description="torch threads in each CPU actor; None = ceil(cpus_per_actor).",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Model dtype in the actors: auto = bf16 on GPU, fp32 on CPU."
    )

    @model_validator(mode="after")
    def _unique_keys(self) -> EvalConfig:
        keys = [entry.key for entry in self.benchmarks]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise ValueError(f"benchmarks: each key may appear once, repeated: {repeated}")
        return self
