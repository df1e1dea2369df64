"""The Markdown report of train_throughput.py's results (also usable on their JSON).

`markdown(result)` takes the dict that train_throughput.py writes to
`results/train_throughput.json`, so a committed JSON re-renders without training anything.
"""

from __future__ import annotations

from typing import Any

from benchmarks.report import md_table


def markdown(result: dict[str, Any]) -> str:
    peak, bt, case = result["matmul_peak"], result["batch"], result["case"]
    designs, ratio = result["designs"], result["ratio_vlora_over_baseline"]
    cuda = result["device"] == "cuda"
    headers = [
        "design",
        "samples/s",
        "text tok/s",
        "LLM pos/s",
        "step ms",
        "IQR ms",
        "fwd ms",
        "bwd ms",
        "opt ms",
        "trainable params",
        "train GFLOP/step (counted)",
        "3×fwd GFLOP (paper)",
        "GFLOP/s",
        "% of peak",
        "activations MB",
        "CUDA peak MB" if cuda else "optim. state MB",
    ]
    rows = [
        [
            name,
            d["samples_per_s"],
            d["text_tokens_per_s"],
            d["llm_positions_per_s"],
            d["step_ms"],
            d["step_iqr_ms"],
            d["forward_ms"],
            d["backward_ms"],
            d["optimizer_ms"],
            f"{d['trainable_params']:,d}",
            d["counted_train_gflop"],
            d["paper_train_gflop_3x"],
            d["achieved_gflops_per_s"],
            d["percent_of_peak"],
            d["saved_activation_mb"],
            d["cuda_peak_mb"] if cuda else d["optimizer_state_mb"],
        ]
        for name, d in designs.items()
    ]
    ratio_rows = [[key.replace("_", " "), value] for key, value in ratio.items()]
    notes = "".join(f"\n\nNote: {n}." for n in case["notes"])
    return "\n\n".join(
        [
            "# Training throughput: pre-training, VLoRA vs the input-space baseline (same LLM)",
            f"{case['description'].rstrip('.')}. LLM weights: `{case['llm_source']}`; d={case['d']}, "
            f"h={case['h']}, k={case['k']}, r={case['r']}.{notes}",
            f"Pre-training step on {result['device']} ({result['precision']}): LLM and vision "
            "frozen (`set_trainable(bridge=True, llm=False)`); VLoRA trains the generator and "
            "W_s, the baseline the projector; forward + backward + AdamW "
            f"(lr {result['optimizer']['lr']:g}, grad-norm clip {result['optimizer']['max_grad_norm']}); "
            f"logits: {result.get('logits_for', 'all')} positions. "
            f"Same batch for both: {bt['batch_size']} samples of the plain template, "
            f"{bt['text_tokens_per_sample']} text tokens each ({bt['prompt_tokens_per_sample']} "
            f"prompt: BOS + image placeholder, {bt['caption_tokens_per_sample']} caption tokens, "
            f"{bt['padding_tokens']} padding), precomputed features "
            f"[{bt['batch_size']}, {bt['visual_tokens']}, {bt['feature_dim']}]. The LLM sees "
            f"{bt['llm_positions_per_sample']['vlora']} positions per sample with VLoRA and "
            f"{bt['llm_positions_per_sample']['baseline']} with the baseline.",
            f"Measured {peak['dtype']} GEMM peak: **{peak['best_gflops']:.1f} GFLOP/s** "
            f"(square {peak['best_size']}, sweep {peak['gflops_by_size']}).",
            f"**VLoRA / baseline: {ratio['samples_per_s']:.2f}× the samples/s** "
            f"(step time ratio {ratio['step_time']:.3f}, counted training FLOPs ratio "
            f"{ratio['counted_train_flops']:.3f}).",
            md_table(headers, rows),
            "Counted FLOPs are forward + backward of one step from the operators that ran; with "
            "the LLM frozen, backward skips weight gradients (and, for VLoRA, every block before "
            "the first inserted one), so it is below the paper-style 3 × forward. Activations = "
            "bytes autograd saved for backward (parameters excluded).",
            "VLoRA / baseline:\n\n" + md_table(["quantity", "ratio"], ratio_rows),
            f"Process peak RSS (both designs, whole run): {result['process_peak_rss_mb']:.0f} MB.",
        ]
    )
