"""Training steps of gpu_h200.py: DeepSpeed ZeRO-2 bf16 on one device, VLoRA vs baseline.

Each model gets its own engine per micro batch (destroyed afterwards, so that its ZeRO gradient
hooks do not outlive it); each timed step is split into forward, backward and optimizer step,
and one more step runs under torch.profiler. Without DeepSpeed it falls back to a plain torch
AdamW and says so in the results.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from typing import Any

import torch

from benchmarks import models as bm
from benchmarks.timing import summarize
from vlora.data.tokenize import IGNORE_INDEX


def _init_distributed(device: str) -> None:
    for key, value in {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29517",
    }.items():
        os.environ.setdefault(key, value)
    if device == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        # DeepSpeed compiles a small C++ op on first use on CPU: keep it across runs.
        from vlora.offline.cache import vlora_cache_dir

        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(vlora_cache_dir() / "torch_extensions"))


def ds_config(micro_batch: int) -> dict[str, Any]:
    return {
        "train_batch_size": micro_batch,
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "zero_optimization": {
            "stage": 2,
            "contiguous_gradients": True,
            "overlap_comm": True,
            "reduce_bucket_size": 5e8,
            "allgather_bucket_size": 5e8,
        },
        "bf16": {"enabled": True},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def _engine(model: torch.nn.Module, micro_batch: int, device: str) -> tuple[Any, str]:
    """(object with forward/backward/step, engine name): DeepSpeed ZeRO-2 bf16, else torch."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        _init_distributed(device)
        import deepspeed

        if not torch.distributed.is_initialized():
            deepspeed.init_distributed(dist_backend="gloo" if device == "cpu" else "nccl")
        # fused=False/foreach: a plain torch AdamW, so no DeepSpeed op needs compiling
        optimizer = torch.optim.AdamW(params, lr=1e-5)
        engine, *_ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=ds_config(micro_batch)
        )
        return engine, f"deepspeed {deepspeed.__version__} ZeRO-2 bf16"
    except ImportError as exc:
        model.to(torch.bfloat16)
        return _TorchEngine(
            model, torch.optim.AdamW(params, lr=1e-5)
        ), f"torch AdamW bf16 (no deepspeed: {exc})"


class _TorchEngine:
    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.module, self.optimizer = model, optimizer

    def __call__(self, **batch: Any) -> Any:
        return self.module(**batch)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def train_batch(
    pair: bm.BenchPair, micro_batch: int, caption_tokens: int
) -> dict[str, torch.Tensor]:
    """A pre-training batch: "<image>" + caption, caption supervised, features [B, L, d_v]."""
    ids = bm.with_placeholder(bm.text_ids(pair, micro_batch, caption_tokens, seed=1))
    labels = ids.clone()
    labels[:, 0] = IGNORE_INDEX
    feats = bm.image_features(pair, micro_batch).to(torch.bfloat16)
    return {"input_ids": ids, "labels": labels, "image_features": feats}


def _sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


def train_one(
    model: Any, batch: dict[str, torch.Tensor], args: argparse.Namespace, device: str
) -> dict[str, Any]:
    """Warm-up then timed steps; each step split into forward, backward and optimizer step."""
    micro_batch = batch["input_ids"].shape[0]
    model.train()
    model.set_trainable(bridge=True, llm=args.train_llm)
    engine, engine_name = _engine(model, micro_batch, device)
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    warmup = 1 if args.dry_run else 3
    phases: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": [], "step": []}
    losses = []
    for i in range(warmup + args.train_steps):
        _sync(device)
        t0 = time.perf_counter()
        loss = engine(**batch).loss
        _sync(device)
        t1 = time.perf_counter()
        engine.backward(loss)
        _sync(device)
        t2 = time.perf_counter()
        engine.step()
        _sync(device)
        t3 = time.perf_counter()
        losses.append(float(loss.detach()))
        if i >= warmup:
            for key, value in (
                ("forward", t1 - t0),
                ("backward", t2 - t1),
                ("optimizer", t3 - t2),
                ("step", t3 - t0),
            ):
                phases[key].append(value)
    timing = summarize(phases["step"], warmup)
    text_tokens = micro_batch * (batch["input_ids"].shape[1] - 1)
    out = {
        "engine": engine_name,
        "micro_batch": micro_batch,
        "step": timing.to_dict(),
        "step_ms": timing.median_s * 1e3,
        "phase_ms": {k: summarize(v).median_s * 1e3 for k, v in phases.items()},
        "samples_per_s": micro_batch / timing.median_s,
        "text_tokens_per_s": text_tokens / timing.median_s,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "losses": losses,
    }
    if device != "cpu":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    out["profile"] = _profile_step(engine, batch, device)
    model.eval()
    model.requires_grad_(False)
    if hasattr(engine, "destroy"):
        engine.destroy()  # removes ZeRO's gradient hooks: the model gets a new engine next time
    del engine
    gc.collect()
    if device != "cpu":
        torch.cuda.empty_cache()
    return out


def _profile_step(engine: Any, batch: dict[str, torch.Tensor], device: str) -> dict[str, Any]:
    """One more training step under torch.profiler: the ops with the most self time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device != "cpu" else [])
    with profile(activities=activities) as prof:
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
        _sync(device)
    events = list(prof.key_averages())

    def top(attr: str) -> list[dict[str, Any]]:
        ranked = sorted(events, key=lambda e: getattr(e, attr, 0) or 0, reverse=True)[:8]
        return [
            {"op": e.key[:90], "ms": (getattr(e, attr, 0) or 0) / 1e3, "calls": e.count}
            for e in ranked
        ]

    out = {"top_cpu_self": top("self_cpu_time_total")}
    if device != "cpu":
        out["top_device_self"] = top("self_device_time_total")
        out["device_total_ms"] = (
            sum(getattr(e, "self_device_time_total", 0) or 0 for e in events) / 1e3
        )
    return out


def train_section(pair: bm.BenchPair, args: argparse.Namespace, device: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "caption_tokens": args.caption_tokens,
        "visual_tokens": pair.case.visual_tokens,
        "train_llm": args.train_llm,
        "runs": [],
    }
    for micro_batch in args.micro_batches:
        batch = train_batch(pair, micro_batch, args.caption_tokens)
        run: dict[str, Any] = {"micro_batch": micro_batch}
        for key, model in (("vlora", pair.vlora), ("baseline", pair.baseline)):
            try:
                run[key] = train_one(model, batch, args, device)
            except Exception as exc:  # e.g. out of memory at a large micro batch: keep the rest
                model.eval()
                model.requires_grad_(False)
                gc.collect()
                if device != "cpu":
                    torch.cuda.empty_cache()
                out.setdefault("errors", []).append(f"micro batch {micro_batch} {key}: {exc}")
                print(f"micro batch {micro_batch} {key} failed: {exc}", flush=True)
                break
            r = run[key]
            print(
                f"micro batch {micro_batch} {key}: {r['step_ms']:.1f} ms/step "
                f"({', '.join(f'{k} {v:.1f}' for k, v in r['phase_ms'].items())}), "
                f"{r['samples_per_s']:.1f} samples/s",
                flush=True,
            )
        if "vlora" in run and "baseline" in run:
            run["speedup_vlora_over_baseline"] = (
                run["baseline"]["step_ms"] / run["vlora"]["step_ms"]
            )
            out["runs"].append(run)
    return out
