"""Load a saved model of either design by the kind its folder records (like transformers'
AutoModel): `load_pretrained(folder)` returns a `VLoRAModel` or an `InputSpaceModel`."""

from __future__ import annotations

from pathlib import Path

from vlora.baseline import InputSpaceModel
from vlora.checkpoint import build_model, read_checkpoint_config
from vlora.model import VLoRAModel
from vlora.model_base import MultimodalModel

MODEL_CLASSES: dict[str, type[MultimodalModel]] = {
    cls.kind: cls for cls in (VLoRAModel, InputSpaceModel)
}


def model_class(kind: str) -> type[MultimodalModel]:
    if kind not in MODEL_CLASSES:
        raise ValueError(f"unknown model kind '{kind}'; known: {', '.join(MODEL_CLASSES)}")
    return MODEL_CLASSES[kind]


def load_pretrained(path: str | Path) -> MultimodalModel:
    """The model saved at `path`, of the class its `vlora_config.json` names."""
    manifest = read_checkpoint_config(path)
    return build_model(model_class(manifest["kind"]), path, manifest)
