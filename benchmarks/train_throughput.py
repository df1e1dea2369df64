"""Training throughput: pre-training steps of VLoRA vs the input-space baseline, same LLM, one run.

    python -m benchmarks.train_throughput                     # smollm2-dinov2, ~2 min on 2 cores
    python -m benchmarks.train_throughput --visual-tokens 64  # the local config's 112 px
    python -m benchmarks.train_throughput --preset tiny-llama --warmup 1 --iterations 2

One step is a pre-training step as the pipeline runs it (pipelines/training/worker.py and the DDP
engine of pipelines/training/engines.py), for both designs around the same LLM weights
(benchmarks/models.py: VLoRA wraps the LLM, the baseline runs an unwrapped copy):
- `set_trainable(bridge=True, llm=False)`: LLM and vision frozen; VLoRA trains its generator
  (W_s included), the baseline its projector; the vision tower never runs (features are
  precomputed in the pipeline; here they are random [B, L, d_v], L from the preset or
  `--visual-tokens`);
- the same batch for both: B samples of the "plain" template, [BOS, <image>, caption…]
  (vlora.data.pretrain.encode_caption, collated by vlora.data.collate.collate_batch), each
  caption a realistic English caption cut to exactly `--caption-tokens` tokens (default 64:
  CapsFusion captions average ~40–50 words; 64 SmolLM2 tokens ≈ 50 words), so no padding;
- forward (loss) → backward → optimizer (grad-norm clipping, AdamW over
  `vlora.training.params.adamw_param_groups`, zero_grad), each phase timed apart; warm-up steps,
  then timed steps, the two designs round-robin (`--max-other-load` re-runs contended rounds).
Reported per design: samples/s, text tokens/s (the pipeline's count: every non-padding input
token, BOS and placeholder included, identical for both designs), LLM positions/s (VLoRA: the
text without the placeholder; baseline: + L visual tokens), step time by phase, trainable
parameters, activation memory saved for backward, optimizer state, peak CUDA memory (CUDA) or
the process's peak RSS (CPU, both designs together), FLOPs of forward + backward counted from
the operators that run (torch.utils.flop_counter) against the paper-style 3 × forward estimate
(vlora.flops; with a frozen LLM the true backward is cheaper), and the achieved FLOP/s against
the measured matmul peak (flops.matmul_peak). On CUDA the step runs under bf16 autocast
(`--precision`), fp32 weights. Writes benchmarks/results/train_throughput.{json,md} (the
Markdown by benchmarks/train_throughput_report.py).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks import contention, train_throughput_report
from benchmarks import models as bm
from benchmarks.flops import FlopCount, custom_flop_mapping, matmul_peak, rate
from benchmarks.machine import machine_info, set_threads
from benchmarks.results_io import DEFAULT_OUT, write_results
from benchmarks.timing import Timing, summarize, synchronize
from vlora.config import LLMConfig
from vlora.data.collate import collate_batch
from vlora.data.pretrain import encode_caption
from vlora.data.tokenize import IGNORE_INDEX
from vlora.flops import input_space_flops, vlora_flops
from vlora.model_base import MultimodalModel, count_parameters
from vlora.presets import get_preset
from vlora.training.params import adamw_param_groups
from vlora.utils.env import apply_offline_defaults

NAME = "train_throughput"
DESIGNS = ("vlora", "baseline")
PHASES = ("forward", "backward", "optimizer", "step")
# CapsFusion-style captions (one long, fluent sentence or two per image, ~32 words, ~39 SmolLM2
# tokens); row b starts at caption b and takes the next ones until it is long enough, then is cut
# to exactly --caption-tokens tokens.
CAPTIONS = (
    "A red double-decker bus drives along a busy city street lined with shops and cafes, while "
    "pedestrians with umbrellas wait at the crossing under a cloudy grey sky in the afternoon.",
    "A golden retriever puppy sits on a wooden porch next to a pair of muddy boots, looking up at "
    "the camera with its head tilted, as warm evening sunlight falls across the railing.",
    "Two cyclists in bright jerseys ride side by side down a winding mountain road surrounded by "
    "pine trees, with snow-capped peaks and a clear blue sky visible in the distance behind them.",
    "A plate of freshly made pasta with tomato sauce, basil leaves and grated parmesan cheese is "
    "served on a white tablecloth beside a glass of red wine and a small basket of bread.",
)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.train_throughput",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--preset", default="smollm2-dinov2", help="vlora preset (LLM, generator, L)")
    p.add_argument(
        "--random-llm",
        action="store_true",
        help="random-init LLM of the preset's architecture (default: its real weights if any)",
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--logits",
        choices=["labelled", "all"],
        default="labelled",
        help="labelled: logits only where the next token is supervised, as the training stages "
        "run (vlora.loss); all: the full [B, T, V] logits (the path before that loss existed)",
    )
    p.add_argument(
        "--caption-tokens", type=int, default=64, help="supervised caption tokens per sample"
    )
    p.add_argument(
        "--visual-tokens",
        type=int,
        default=None,
        help="L (a square number): override the preset's patch count (generator rebuilt for it)",
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per design")
    p.add_argument("--iterations", type=int, default=10, help="timed steps per design")
    p.add_argument("--lr", type=float, default=None, help="AdamW lr (default: preset recipe)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="auto: bf16 autocast on CUDA, fp32 on the CPU",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peak-sizes", type=_ints, default=None, help="GEMM sweep sizes")
    contention.add_contention_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.caption_tokens < 1 or args.iterations < 1 or args.warmup < 0:
        p.error("--batch-size, --caption-tokens and --iterations must be positive")
    return args


# ----- the pair ------------------------------------------------------------------------------
def preset_case(
    preset_name: str, visual_tokens: int | None = None, random_llm: bool = False
) -> bm.BenchCase:
    """A BenchCase with the preset's LLM (real weights unless `random_llm`), generator, d_v and
    patch count L (or `visual_tokens`)."""
    preset = get_preset(preset_name)
    model = preset.model
    llm = model.llm
    notes: list[str] = []
    if random_llm and llm.source != "random":
        if not llm.architecture:
            raise ValueError(f"preset '{preset_name}' declares no llm.architecture to random-init")
        llm = LLMConfig(source="random", architecture=llm.architecture, tokenizer="byte")
        notes.append(f"random-init LLM of the preset's architecture instead of {model.llm.source}")
    length = visual_tokens or model.vision.num_patches
    return bm.BenchCase(
        name=preset_name,
        description=f"preset {preset_name}: {preset.description}",
        llm=llm,
        generator=model.generator,
        feature_dim=model.vision.feature_dim,
        visual_tokens=length,
        notes=notes,
    )


def build_case_pair(args: argparse.Namespace, device: str) -> tuple[bm.BenchPair, list[str]]:
    """Both designs around the same LLM; falls back to a random LLM when weights are missing."""
    case = preset_case(args.preset, args.visual_tokens, args.random_llm)
    try:
        pair = bm.build_pair(case, device=device)
    except (OSError, ImportError, FileNotFoundError) as err:
        if case.llm.source == "random":
            raise
        print(f"warning: the real LLM weights are unavailable ({err}); random init", flush=True)
        case = preset_case(args.preset, args.visual_tokens, random_llm=True)
        pair = bm.build_pair(case, device=device)
    return pair, list(case.notes)


def set_pretraining(model: MultimodalModel) -> None:
    """What the pipeline's pre-training worker does: bridge trainable, LLM and vision frozen."""
    model.set_trainable(bridge=True, llm=False)
    model.train()
    model.vision.eval()


# ----- the batch -----------------------------------------------------------------------------
def caption_batch(
    tokenizer: Any,
    batch_size: int,
    caption_tokens: int,
    feature_shape: tuple[int, int],
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Collated pre-training batch: B plain-template samples whose captions are cut to exactly
    `caption_tokens` supervised tokens, and random float16 features [L·d_v] (as stored)."""
    rng = np.random.default_rng(seed)
    num_tokens, dim = feature_shape
    rows = []
    for b in range(batch_size):
        parts = [CAPTIONS[b % len(CAPTIONS)]]
        while True:
            full = encode_caption(tokenizer, " ".join(parts))
            if full.num_supervised > caption_tokens:
                break
            parts.append(CAPTIONS[(b + len(parts)) % len(CAPTIONS)])
        prefix = next(i for i, label in enumerate(full.labels) if label != IGNORE_INDEX)
        encoded = full.truncate(prefix + caption_tokens)
        if encoded.num_supervised != caption_tokens:  # supervised tokens are contiguous here
            raise RuntimeError(
                f"caption cut to {encoded.num_supervised} supervised tokens, not {caption_tokens}"
            )
        rows.append(
            {
                "input_ids": np.asarray(encoded.input_ids, dtype=np.int32),
                "labels": np.asarray(encoded.labels, dtype=np.int32),
                "features": rng.standard_normal(num_tokens * dim).astype(np.float16),
                "has_image": True,
            }
        )
    batch = collate_batch(rows, tokenizer.pad_token_id, feature_shape)
    tokens = int(batch["attention_mask"].sum())
    info = {
        "text_tokens_per_sample": tokens // batch_size,
        "caption_tokens_per_sample": caption_tokens,
        "prompt_tokens_per_sample": prefix,
        "padding_tokens": int((batch["attention_mask"] == 0).sum()),
    }
    return batch, info


# ----- one training step -----------------------------------------------------------------------
class Trainer:
    """One design's pre-training step, phases timed apart (device work included)."""

    def __init__(
        self,
        model: MultimodalModel,
        batch: dict[str, torch.Tensor],
        lr: float,
        weight_decay: float,
        betas: tuple[float, float],
        max_grad_norm: float,
        autocast_dtype: torch.dtype | None,
        logits_for: str = "labelled",
    ) -> None:
        self.model, self.batch = model, batch
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            adamw_param_groups(model, weight_decay), lr=lr, betas=betas
        )
        self.max_grad_norm = max_grad_norm
        self.autocast_dtype = autocast_dtype
        self.logits_for = logits_for
        self.losses: list[float] = []
        self.cuda_peak_bytes = 0

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.model.device.type, dtype=self.autocast_dtype)

    def loss(self) -> torch.Tensor:
        with self._autocast():
            return self.model(**self.batch, logits_for=self.logits_for).loss

    def forward_backward(self) -> None:
        self.loss().backward()
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> dict[str, float]:
        cuda = self.model.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        synchronize()
        t0 = time.perf_counter()
        loss = self.loss()
        synchronize()
        t1 = time.perf_counter()
        loss.backward()
        synchronize()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(self.trainable, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        synchronize()
        t3 = time.perf_counter()
        self.losses.append(float(loss.detach()))
        if cuda:
            self.cuda_peak_bytes = max(self.cuda_peak_bytes, torch.cuda.max_memory_allocated())
        return {"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2, "step": t3 - t0}

    def saved_activation_bytes(self) -> int:
        """Bytes of the tensors autograd keeps for backward (distinct storages, parameters and
        the frozen weights excluded): the activation memory of one step."""
        params = {p.untyped_storage().data_ptr() for p in self.model.parameters()}
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                seen[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = self.loss()
        total = sum(seen.values())
        del loss
        return total

    def optimizer_state_bytes(self) -> int:
        return sum(
            v.numel() * v.element_size()
            for state in self.optimizer.state.values()
            for v in state.values()
            if isinstance(v, torch.Tensor)
        )


def time_rounds(
    steps: dict[str, Callable[[], dict[str, float]]],
    warmup: int,
    iterations: int,
    guard: contention.ContentionGuard | None,
) -> dict[str, dict[str, Timing]]:
    """Round-robin steps of every design (like timing.time_interleaved, but each call returns
    its phase times); a contended timed round is run again (at most guard.max_retries times)."""
    samples = {name: {phase: [] for phase in PHASES} for name in steps}
    for index in range(warmup + iterations):
        this_round = contention.guarded_round(
            lambda: {name: fn() for name, fn in steps.items()}, guard, timed=index >= warmup
        )
        if index >= warmup:
            for name, phases in this_round.items():
                for phase, seconds in phases.items():
                    samples[name][phase].append(seconds)
    return {
        name: {phase: summarize(values, warmup) for phase, values in phases.items()}
        for name, phases in samples.items()
    }


def _cpu_flash_backward_flops(
    grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
) -> int:
    # dS·K, dSᵀ·Q, Pᵀ·dO and dO·Vᵀ: twice the forward's QKᵀ and PV (full square, as counted).
    batch, heads, s_q, dim = query_shape
    return 8 * batch * heads * s_q * key_shape[-2] * dim


def count_train_flops(fn: Callable[[], Any]) -> FlopCount:
    """flops.count_flops, plus the CPU flash-attention backward kernel the stock counter misses."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = custom_flop_mapping()
    backward = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if backward is not None:
        mapping[backward] = _cpu_flash_backward_flops
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with counter:
        fn()
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return FlopCount(total=int(counter.get_total_flops()), by_operator=by_op)


def paper_forward_flops(pair: bm.BenchPair, design: str, text_tokens: int) -> float:
    """vlora.flops per sample: VLoRA's training-mode forward over the C text positions the LLM
    sees (factorised deltas), or the input-space forward over L + C."""
    d, h = pair.blocks, pair.hidden
    if design == "vlora":
        k, r = pair.inserted_blocks, pair.case.generator.rank
        return vlora_flops(d, h, text_tokens, k, r, mode="training")
    return input_space_flops(d, h, text_tokens, pair.case.visual_tokens)


# ----- the run ---------------------------------------------------------------------------------
def resolve_device(choice: str) -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device")
    return choice


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    precision = (
        args.precision if args.precision != "auto" else "bf16" if device == "cuda" else "fp32"
    )
    autocast = torch.bfloat16 if precision == "bf16" else None
    peak_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    sizes = args.peak_sizes or ([1024, 2048, 4096, 8192] if device == "cuda" else [256, 512, 1024])
    peak = matmul_peak(sizes=sizes, dtype=peak_dtype, device=device)
    print(
        f"{peak['dtype']} GEMM peak ({device}): {peak['best_gflops']:.1f} GFLOP/s "
        f"({peak['gflops_by_size']})",
        flush=True,
    )
    torch.manual_seed(args.seed)
    pair, notes = build_case_pair(args, device)
    case = pair.case
    recipe = get_preset(args.preset).recipe
    lr = args.lr if args.lr is not None else recipe.pretrain_lr
    feature_shape = (case.visual_tokens, case.feature_dim)
    batch, tokens = caption_batch(
        pair.vlora.tokenizer, args.batch_size, args.caption_tokens, feature_shape, args.seed
    )
    batch = {k: v.to(device) for k, v in batch.items()}
    text = tokens["text_tokens_per_sample"]
    positions = {"vlora": text - 1, "baseline": text - 1 + case.visual_tokens}
    models = {"vlora": pair.vlora, "baseline": pair.baseline}
    trainers: dict[str, Trainer] = {}
    for name, model in models.items():
        set_pretraining(model)
        trainers[name] = Trainer(
            model, batch, lr, recipe.weight_decay, (0.9, 0.999), 1.0, autocast, args.logits
        )
    print(
        f"{case.name}: batch {args.batch_size} × {text} text tokens ({args.caption_tokens} caption), "
        f"L={case.visual_tokens} features of {case.feature_dim}, {device} {precision}",
        flush=True,
    )
    timings = time_rounds(
        {name: t.step for name, t in trainers.items()},
        args.warmup,
        args.iterations,
        contention.GUARD,
    )
    designs: dict[str, Any] = {}
    for name, trainer in trainers.items():
        model = trainer.model
        forward = count_train_flops(trainer.loss)
        fwd_bwd = count_train_flops(trainer.forward_backward)
        paper_fwd = paper_forward_flops(pair, name, positions["vlora"]) * args.batch_size
        step = timings[name]["step"].median_s
        bridge = {
            key: count_parameters(m, trainable=True) for key, m in model.bridge_modules().items()
        }
        row: dict[str, Any] = {
            "design": "vlora" if name == "vlora" else "input_space",
            "trainable_params": count_parameters(model, trainable=True),
            "trainable_params_by_module": bridge,
            "frozen_params": count_parameters(model, trainable=False),
            "timing": {phase: t.to_dict() for phase, t in timings[name].items()},
            **{f"{phase}_ms": timings[name][phase].median_s * 1e3 for phase in PHASES},
            "step_iqr_ms": timings[name]["step"].iqr_s * 1e3,
            "samples_per_s": args.batch_size / step,
            "text_tokens_per_s": args.batch_size * text / step,
            "llm_positions_per_sample": positions[name],
            "llm_positions_per_s": args.batch_size * positions[name] / step,
            "counted_forward_gflop": forward.total / 1e9,
            "counted_train_gflop": fwd_bwd.total / 1e9,
            "counted_train_by_operator": fwd_bwd.by_operator,
            "paper_forward_gflop": paper_fwd / 1e9,
            "paper_train_gflop_3x": 3 * paper_fwd / 1e9,
            **rate(fwd_bwd.total, step, peak["best_gflops"]),
            "saved_activation_mb": trainer.saved_activation_bytes() / 1e6,
            "optimizer_state_mb": trainer.optimizer_state_bytes() / 1e6,
            "loss_first": trainer.losses[0],
            "loss_last": trainer.losses[-1],
        }
        if device == "cuda":
            row["cuda_peak_mb"] = trainer.cuda_peak_bytes / 1e6
        designs[name] = row
        print(
            f"  {name:<8} step {row['step_ms']:8.1f} ms (fwd {row['forward_ms']:.1f} / bwd "
            f"{row['backward_ms']:.1f} / opt {row['optimizer_ms']:.1f}) → {row['samples_per_s']:.2f} "
            f"samples/s, {row['text_tokens_per_s']:.0f} text tokens/s, "
            f"{row['achieved_gflops_per_s']:.1f} GFLOP/s ({row['percent_of_peak']:.1f}% of peak)",
            flush=True,
        )
    v, b = designs["vlora"], designs["baseline"]
    ratio = {
        "samples_per_s": v["samples_per_s"] / b["samples_per_s"],
        "step_time": v["step_ms"] / b["step_ms"],
        "forward_time": v["forward_ms"] / b["forward_ms"],
        "backward_time": v["backward_ms"] / b["backward_ms"],
        "counted_train_flops": v["counted_train_gflop"] / b["counted_train_gflop"],
        "saved_activations": v["saved_activation_mb"] / b["saved_activation_mb"],
        "trainable_params": v["trainable_params"] / b["trainable_params"],
    }
    print(f"  VLoRA / baseline: samples/s × {ratio['samples_per_s']:.2f}", flush=True)
    return {
        "benchmark": NAME,
        "preset": args.preset,
        "case": {
            "name": case.name,
            "description": case.description,
            "llm_source": case.llm.source,
            "notes": notes,
            "d": pair.blocks,
            "h": pair.hidden,
            "k": pair.inserted_blocks,
            "r": case.generator.rank,
            "generator": case.generator.model_dump(),
        },
        "device": device,
        "precision": precision,
        "logits_for": args.logits,
        "optimizer": {
            "kind": "AdamW (adamw_param_groups)",
            "lr": lr,
            "weight_decay": recipe.weight_decay,
            "betas": [0.9, 0.999],
            "max_grad_norm": 1.0,
        },
        "batch": {
            "batch_size": args.batch_size,
            **tokens,
            "visual_tokens": case.visual_tokens,
            "feature_dim": case.feature_dim,
            "llm_positions_per_sample": positions,
        },
        "matmul_peak": peak,
        "designs": designs,
        "ratio_vlora_over_baseline": ratio,
        "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    apply_offline_defaults()
    args = parse_args(argv)
    set_threads(args.threads)
    idle = contention.apply_contention_args(args, guard=resolve_device(args.device) == "cpu")
    try:
        result = run(args)
        result["idle_check"] = idle
        result["contention_guard"] = contention.GUARD.to_dict() if contention.GUARD else None
    finally:
        contention.GUARD = None  # the guard belongs to this run only
    result["settings"] = {k: v for k, v in vars(args).items() if k != "out"}
    result["machine_load_after"] = machine_info()["load_average_1_5_15"]
    json_path, md_path = write_results(
        args.out, NAME, result, train_throughput_report.markdown(result)
    )
    print(f"wrote {json_path} and {md_path}")
    return result


if __name__ == "__main__":
    main()
