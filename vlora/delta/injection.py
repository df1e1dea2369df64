"""Injecting delta wrappers into an unmodified transformers causal LM by module name.

`plan_deltas` turns a generator config into the list of delta *types* (q, k, v, o and either the
parallel "m" branch or gate/up/down) with their real shapes, read from the LLM's own modules
(GQA k/v are narrower than h). `inject_deltas` replaces each target module, PEFT-style, by a
wrapper holding the original as `base_layer`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedModel

from vlora.config import GeneratorConfig
from vlora.delta.layers import DeltaLinear, DeltaParallelBranch, LowRankDelta
from vlora.llm import blocks_prefix, decoder_blocks, module_names_for

BASE_LAYER = "base_layer"


@dataclass(frozen=True)
class DeltaType:
    """One kind of delta (e.g. 'k'), applied at the same relative module in every inserted block."""

    name: str  # q, k, v, o, m (parallel MLP branch), gate, up, down
    module_suffix: str  # relative to a decoder block, e.g. 'self_attn.k_proj'
    in_features: int
    out_features: int
    parallel: bool  # True: branch around a whole module; False: delta on an nn.Linear


@dataclass(frozen=True)
class DeltaPlan:
    blocks: list[int]  # 0-based decoder blocks that get deltas (k of them)
    types: list[DeltaType]
    blocks_prefix: str  # e.g. 'model.layers'

    def module_name(self, block: int, delta_type: DeltaType) -> str:
        return f"{self.blocks_prefix}.{block}.{delta_type.module_suffix}"

    def module_names(self) -> list[str]:
        return [self.module_name(b, t) for t in self.types for b in self.blocks]


def _linear(block: nn.Module, suffix: str, target: str, block_index: int) -> nn.Linear:
    try:
        module = block.get_submodule(suffix)
    except AttributeError:
        raise ValueError(
            f"generator.targets: '{target}' maps to '{suffix}', which block {block_index} of this "
            "LLM does not have"
        ) from None
    if isinstance(module, LowRankDelta):
        module = module.base_layer
    if not isinstance(module, nn.Linear):
        raise ValueError(f"generator.targets: '{suffix}' is {type(module).__name__}, not Linear")
    return module


def plan_deltas(llm: PreTrainedModel, config: GeneratorConfig) -> DeltaPlan:
    names = module_names_for(llm.config.model_type)
    blocks = decoder_blocks(llm)
    chosen = config.resolve_blocks(len(blocks))
    first = blocks[chosen[0]]
    hidden = llm.config.hidden_size
    types: list[DeltaType] = []
    for target in config.targets:
        if target == "m" and config.mlp_mode == "parallel":
            try:
                first.get_submodule(names.mlp)
            except AttributeError:
                raise ValueError(f"generator.targets: 'm' needs a '{names.mlp}' module") from None
            types.append(DeltaType("m", names.mlp, hidden, hidden, parallel=True))
            continue
        for name in ("gate", "up", "down") if target == "m" else (target,):
            suffix = getattr(names, name)
            linear = _linear(first, suffix, target, chosen[0])
            types.append(
                DeltaType(name, suffix, linear.in_features, linear.out_features, parallel=False)
            )
    return DeltaPlan(blocks=chosen, types=types, blocks_prefix=blocks_prefix(llm))


def inject_deltas(
    llm: PreTrainedModel, plan: DeltaPlan, scale: float
) -> dict[str, list[LowRankDelta]]:
    """Wrap every planned module; returns delta type name → wrappers in block order."""
    wrappers: dict[str, list[LowRankDelta]] = {t.name: [] for t in plan.types}
    for delta_type in plan.types:
        for block in plan.blocks:
            full_name = plan.module_name(block, delta_type)
            parent_name, _, child_name = full_name.rpartition(".")
            parent = llm.get_submodule(parent_name)
            original = getattr(parent, child_name)
            if isinstance(original, LowRankDelta):
                raise ValueError(f"{full_name} is already wrapped")
            if delta_type.parallel:
                wrapper: LowRankDelta = DeltaParallelBranch(original, delta_type.in_features, scale)
            else:
                if (original.in_features, original.out_features) != (
                    delta_type.in_features,
                    delta_type.out_features,
                ):
                    raise ValueError(
                        f"{full_name} has a different shape from block {plan.blocks[0]}"
                    )
                wrapper = DeltaLinear(original, scale)
            setattr(parent, child_name, wrapper)
            wrappers[delta_type.name].append(wrapper)
    return wrappers


def wrapped_module_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, LowRankDelta)]


def unwrapped_state_dict_key(key: str) -> str:
    """'model.layers.3.self_attn.q_proj.base_layer.weight' → '…q_proj.weight' (HF layout)."""
    return key.replace(f".{BASE_LAYER}.", ".")
