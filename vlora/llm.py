"""Building the base causal LM and finding its decoder blocks and target layers.

The LLM is an unmodified transformers model; deltas are injected afterwards by module name
(`vlora.delta.injection`). Families differ only in the names of their projections, so adding
one is an entry in `MODULE_NAMES`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from vlora.config import LLMConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FamilyModuleNames:
    """Names, relative to one decoder block, of the modules deltas attach to."""

    q: str = "self_attn.q_proj"
    k: str = "self_attn.k_proj"
    v: str = "self_attn.v_proj"
    o: str = "self_attn.o_proj"
    mlp: str = "mlp"
    gate: str = "mlp.gate_proj"
    up: str = "mlp.up_proj"
    down: str = "mlp.down_proj"


LLAMA_STYLE = FamilyModuleNames()
MODULE_NAMES: dict[str, FamilyModuleNames] = {
    family: LLAMA_STYLE
    for family in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "granite", "olmo2")
}

# Fields compared between a preset's declared architecture and a downloaded config.
_ARCH_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
)


def module_names_for(model_type: str) -> FamilyModuleNames:
    try:
        return MODULE_NAMES[model_type]
    except KeyError:
        raise ValueError(
            f"llm: model_type '{model_type}' has no delta target names; supported families: "
            f"{', '.join(sorted(MODULE_NAMES))} (add one to vlora.llm.MODULE_NAMES)"
        ) from None


def architecture_config(config: LLMConfig) -> PretrainedConfig:
    """The HF config declared in `config.architecture`, without touching the hub."""
    if not config.architecture:
        raise ValueError(f"llm.architecture: needed to build '{config.source}' without weights")
    kwargs = dict(config.architecture)
    hf_config = AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
    hf_config._attn_implementation = config.attn_implementation
    return hf_config


def _check_architecture(config: LLMConfig, loaded: PretrainedConfig) -> None:
    if not config.architecture:
        return
    mismatched = {
        key: (config.architecture[key], getattr(loaded, key, None))
        for key in _ARCH_KEYS
        if key in config.architecture and config.architecture[key] != getattr(loaded, key, None)
    }
    if mismatched:
        raise ValueError(
            f"llm.architecture does not match the weights of '{config.source}': "
            + ", ".join(f"{k}: declared {a}, loaded {b}" for k, (a, b) in mismatched.items())
        )


def build_llm(config: LLMConfig, meta: bool = False) -> PreTrainedModel:
    """Load or create the base LLM. `meta=True` builds the architecture without weights."""
    dtype = getattr(torch, config.dtype)
    if meta:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(architecture_config(config), dtype=dtype)
    if config.source == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = AutoModelForCausalLM.from_config(architecture_config(config), dtype=dtype)
        return model
    from vlora.offline import resolve_source

    model = AutoModelForCausalLM.from_pretrained(
        resolve_source(config.source),
        revision=config.revision,
        dtype=dtype,
        attn_implementation=config.attn_implementation,
    )
    _check_architecture(config, model.config)
    return model


def decoder_blocks(model: PreTrainedModel) -> nn.ModuleList:
    """The ModuleList of decoder blocks (model.model.layers for Llama-style families)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    blocks = getattr(decoder, "layers", None)
    if not isinstance(blocks, nn.ModuleList):
        raise ValueError(f"cannot find the decoder blocks of {type(model).__name__}")
    return blocks


def blocks_prefix(model: PreTrainedModel) -> str:
    """Fully qualified module name of the decoder block list, e.g. 'model.layers'."""
    blocks = decoder_blocks(model)
    for name, module in model.named_modules():
        if module is blocks:
            return name
    raise ValueError("decoder blocks are not registered under the model")
