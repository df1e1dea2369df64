"""transformers vision towers: CLIP, SigLIP and DINOv2.

Blocks after the selected feature layer are dropped at build time: they would cost compute and
memory for hidden states nobody reads.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoConfig,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    PretrainedConfig,
    PreTrainedModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from vlora.config import VisionEncoderConfig
from vlora.vision.activation import KNOWN_HF_TOWER_ACTIVATIONS, check_activation, module_activation
from vlora.vision.base import VisionEncoder, check_tower_shape, layer_index

RANDOM_INIT_SEED = 0

# model_type (of the tower or of its full two-tower checkpoint) → (config class, model class)
_FAMILIES: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel]]] = {
    "clip": (CLIPVisionConfig, CLIPVisionModel),
    "clip_vision_model": (CLIPVisionConfig, CLIPVisionModel),
    "siglip": (SiglipVisionConfig, SiglipVisionModel),
    "siglip_vision_model": (SiglipVisionConfig, SiglipVisionModel),
    "dinov2": (Dinov2Config, Dinov2Model),
}


def _family(model_type: str) -> tuple[type[PretrainedConfig], type[PreTrainedModel]]:
    try:
        return _FAMILIES[model_type]
    except KeyError:
        raise ValueError(
            f"vision.architecture: model_type '{model_type}' is not supported by the hf backend; "
            f"valid: {', '.join(sorted(_FAMILIES))}"
        ) from None


def _blocks_and_norm(model: PreTrainedModel) -> tuple[nn.ModuleList, nn.Module | None]:
    """The list of transformer blocks and the final norm, whatever the family calls them."""
    tower = getattr(model, "vision_model", model)  # older transformers wrap the tower
    encoder = tower.encoder
    blocks = getattr(encoder, "layers", None) or encoder.layer  # CLIP/SigLIP vs DINOv2
    norm = getattr(tower, "post_layernorm", None) or getattr(tower, "layernorm", None)
    return blocks, norm


def _build_random(config: VisionEncoderConfig, meta: bool) -> PreTrainedModel:
    arch = dict(config.architecture or {})
    config_cls, model_cls = _family(arch.pop("model_type"))
    hf_config = config_cls(**arch)
    if meta:
        with torch.device("meta"):
            return model_cls(hf_config)
    # A fixed seed makes a random tower the same in every process (features stage, training,
    # evaluation), so features computed once stay valid for the model that consumes them.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return model_cls(hf_config)


def load_hf_vision_model(config: VisionEncoderConfig, meta: bool = False) -> PreTrainedModel:
    from vlora.offline import resolve_source

    if config.name == "random" or (meta and config.architecture):
        return _build_random(config, meta)
    source = resolve_source(config.name)
    model_type = AutoConfig.from_pretrained(source).model_type
    _, model_cls = _family(model_type)
    return model_cls.from_pretrained(source)


class HFVisionEncoder(VisionEncoder):
    def __init__(self, config: VisionEncoderConfig, meta: bool = False) -> None:
        super().__init__(config)
        model = load_hf_vision_model(config, meta=meta)
        hf = model.config
        # DINOv2 interpolates its position embeddings to any size; CLIP and SigLIP do not.
        fixed_size = None if hf.model_type == "dinov2" else hf.image_size
        check_tower_shape(config, hf.hidden_size, hf.patch_size, fixed_size)
        blocks, norm = _blocks_and_norm(model)
        _check_tower_activation(config, module_activation(blocks[0]))
        keep = layer_index(config.feature_layer, len(blocks))
        del blocks[keep:]
        if config.apply_final_norm and norm is None:
            raise ValueError("vision.apply_final_norm: this tower has no final norm")
        self.final_norm = norm if config.apply_final_norm else None
        self.model = model

    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values, output_hidden_states=True)
        hidden = out.hidden_states[-1]  # [B, prefix + L, d_v], output of the last kept block
        if self.final_norm is not None:
            hidden = self.final_norm(hidden)
        return hidden[:, self.config.num_prefix_tokens :]  # [B, L, d_v]


def _check_tower_activation(config: VisionEncoderConfig, built: str) -> None:
    """The tower's activation against its weights' (see vlora.vision.activation)."""
    declared = (config.architecture or {}).get("hidden_act")
    if declared is not None and declared != built:
        # a real load builds the tower from the checkpoint's own config; the declared one is
        # what weight-free builds and the FLOPs model use, so it must not disagree
        raise ValueError(
            f"vision.architecture.hidden_act: declares {declared}, but the weights at "
            f"'{config.name}' use {built}"
        )
    field = "vision.architecture.hidden_act" if config.architecture else "vision.name"
    check_activation(built, KNOWN_HF_TOWER_ACTIVATIONS.get(config.name), field)
