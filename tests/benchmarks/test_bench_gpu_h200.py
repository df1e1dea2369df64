"""The GPU script: fails fast without CUDA, and its dry run exercises every section on the CPU."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import gpu_h200, gpu_train


def test_without_cuda_it_stops_at_once_with_a_clear_message(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        gpu_h200.main(["--out", str(tmp_path)])
    assert "needs a CUDA GPU" in str(exc.value) and "--dry-run" in str(exc.value)
    assert not list(tmp_path.iterdir())  # nothing built, nothing written


def test_deepspeed_config_is_zero2_bf16_single_gpu() -> None:
    cfg = gpu_train.ds_config(4)
    assert cfg["zero_optimization"]["stage"] == 2 and cfg["bf16"]["enabled"] is True
    assert cfg["train_batch_size"] == cfg["train_micro_batch_size_per_gpu"] == 4
    assert cfg["gradient_accumulation_steps"] == 1


def test_dry_run_arguments_shrink_the_work() -> None:
    args = gpu_h200.parse_args(["--dry-run"])
    assert args.text_tokens == [8, 32] and args.micro_batches == [2, 3]
    full = gpu_h200.parse_args([])
    assert full.text_tokens == [16, 32, 128, 512] and full.visual_tokens == [256, 576]
    assert full.micro_batches == [4, 16]


@pytest.mark.slow
def test_dry_run_runs_every_section(tmp_path) -> None:
    data = gpu_h200.main(["--dry-run", "--out", str(tmp_path)])
    assert data["errors"] == {}
    s = data["sections"]
    assert s["graphs"] == {"skipped": "needs CUDA"} and s["profile"] == {"skipped": "needs CUDA"}
    assert {r["path"] for r in s["prefill"]["rows"]} >= {
        "generator",
        "merge",
        "vlora_prefill_merged",
        "vlora_prefill_factorised",
        "baseline_prefill",
    }
    assert set(s["prefill"]["time_ratio_vlora_over_baseline"]) == {
        f"B{b}_C{c}_L{n}" for b in (1, 2) for c in (8, 32) for n in (16, 64)
    }
    assert s["crossover"]["decode_step_ms"]["merged"] > 0
    # two micro batches on the same models: a second DeepSpeed engine per model works
    assert [run["micro_batch"] for run in s["train"]["runs"]] == [2, 3]
    assert "errors" not in s["train"]
    for run in s["train"]["runs"]:
        for model in ("vlora", "baseline"):
            assert all(math.isfinite(x) for x in run[model]["losses"])
            assert run[model]["phase_ms"]["step"] > 0
            assert run[model]["profile"]["top_cpu_self"]
        assert run["vlora"]["trainable_params"] > run["baseline"]["trainable_params"]
    saved = json.loads((tmp_path / "gpu_h200_dryrun.json").read_text())
    assert saved["dry_run"] is True
    assert "DRY RUN" in (tmp_path / "gpu_h200_dryrun.md").read_text()
