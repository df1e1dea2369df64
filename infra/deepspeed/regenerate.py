"""Rewrite the DeepSpeed reference templates in this folder from the code that training uses.

    .venv/bin/python infra/deepspeed/regenerate.py          # rewrite the JSON files
    .venv/bin/python infra/deepspeed/regenerate.py --check  # exit 1 when a file is stale

`pipelines.training.deepspeed_config.deepspeed_config` is the source of truth (every training run
also writes the exact JSON it used next to its outputs); these files are what it produces for the
paper config (`pipelines/run_configs/paper.yaml`) on GPUs, so they can be read, diffed and reused
without running anything. tests/infra/test_infra_manifests.py fails when they drift.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CONFIG = "paper"

# template file → (training section of the paper config, dotted overrides of that config)
TEMPLATES: dict[str, tuple[str, list[str]]] = {
    # the paper's setting: ZeRO-2, bf16 (pre-training: global 768 on 24 workers)
    "zero2.json": ("pretrain", []),
    # SFT with the LLM sharded as well (global 128 on 8 workers)
    "zero3.json": ("sft", ["sft.zero_stage=3"]),
    # ... and the optimizer state in CPU memory (DeepSpeed's own AdamW)
    "zero3-offload.json": ("sft", ["sft.zero_stage=3", "sft.offload_optimizer=true"]),
}


def render(section: str, overrides: list[str]) -> dict[str, Any]:
    """The DeepSpeed JSON that a GPU run of `section` of the paper config uses."""
    from pipelines.config.pipeline import load_pipeline_config
    from pipelines.training.deepspeed_config import deepspeed_config
    from pipelines.training.plan import resolve_plan
    from vlora.presets import get_preset

    config = load_pipeline_config(CONFIG, overrides)
    train = getattr(config, section)
    plan = resolve_plan(
        train,
        get_preset(config.preset).recipe,
        section,
        design=config.design,
        fresh_model_config=None,
        init_checkpoint=None,
        # the row count only sets the step count, which the DeepSpeed JSON does not hold;
        # an epoch-based section needs one, so it gets exactly one global batch
        num_rows=None if train.max_steps is not None else train.global_batch_size,
        use_gpu=True,
        export_dir="unused",
    )
    return deepspeed_config(plan, use_gpu=True)


def to_text(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2) + "\n"


def expected_files() -> dict[str, str]:
    """File name → the exact text it must hold."""
    return {
        name: to_text(render(section, overrides))
        for name, (section, overrides) in TEMPLATES.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="Only report stale files.")
    args = parser.parse_args(argv)
    stale = []
    for name, text in expected_files().items():
        path = HERE / name
        if path.is_file() and path.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text)
            print(f"wrote {path}")
    if args.check and stale:
        print(f"stale: {', '.join(stale)} (run {Path(__file__).name})", file=sys.stderr)
        return 1
    if not stale:
        print("DeepSpeed templates are up to date")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1]))  # the repo root, for a run without `pip install -e`
    sys.exit(main())
