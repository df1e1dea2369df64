"""Checkpoints: safetensors + JSON, never pickle.

Layout of a saved model folder:
    vlora_config.json     kind, ModelConfig, where the LLM / vision weights come from
    bridge.safetensors    generator (VLoRA) or projector (baseline) weights
    tokenizer/            the tokenizer, so the folder is self-contained for text processing
    llm/                  only when the LLM's weights differ from `llm.source` (trained, random)
    vision.safetensors    only for a random-init vision encoder (otherwise referenced)

The LLM folder is a plain Hugging Face checkpoint (delta wrappers unwrapped), loadable alone.

This module is the folder format only: it knows no model class. `MultimodalModel.from_pretrained`
passes its own class to `build_model`; `vlora.auto.load_pretrained` picks the class by the kind
the folder records.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from vlora.config import ModelConfig
from vlora.delta.injection import unwrapped_state_dict_key
from vlora.llm import build_llm
from vlora.tokenizer import load_tokenizer
from vlora.utils.atomic import atomic_directory
from vlora.vision import build_vision_encoder

logger = logging.getLogger(__name__)

CONFIG_FILE = "vlora_config.json"
BRIDGE_FILE = "bridge.safetensors"
VISION_FILE = "vision.safetensors"
FORMAT = "vlora-checkpoint"
# 2: the generator's input projection and positions are shared by every delta type
# (`generator.shared_input`, the release's layout). Version-1 folders load with the per-type
# layout they were written with.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


def _vision_is_random(config: ModelConfig) -> bool:
    vision = config.vision
    return (vision.backend == "hf" and vision.name == "random") or (
        vision.backend == "open_clip" and vision.pretrained is None
    )


def _state_dict(module) -> dict:
    # safetensors refuses shared storage; clone() gives every tensor its own (contiguous) copy.
    return {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}


def save_pretrained(model, path: str | Path, save_llm: bool | None = None) -> Path:
    """Write `model` (a `MultimodalModel`) to `path` atomically: a reader never sees a
    half-written folder."""
    if getattr(model, "is_merged", False):  # only VLoRA models merge
        raise RuntimeError("unmerge() before saving: merged weights belong to one image")
    final = Path(path)
    embed_llm = model.llm_modified if save_llm is None else save_llm
    config = model.config.model_copy(deep=True)
    with atomic_directory(final) as tmp:
        bridge = {name: module for name, module in model.bridge_modules().items()}
        tensors = {}
        for name, module in bridge.items():
            tensors.update({f"{name}.{k}": v for k, v in _state_dict(module).items()})
        save_file(tensors, tmp / BRIDGE_FILE, metadata={"format": FORMAT})
        model.tokenizer.save_pretrained(tmp / "tokenizer")
        if embed_llm:
            llm_state = {unwrapped_state_dict_key(k): v for k, v in model.llm.state_dict().items()}
            model.llm.save_pretrained(tmp / "llm", state_dict=llm_state)
        vision_random = _vision_is_random(config)
        if vision_random:
            save_file(_state_dict(model.vision), tmp / VISION_FILE)
        manifest = write_manifest(tmp, model.kind, config, embed_llm, vision_random)
        if final.exists():
            import shutil

            shutil.rmtree(final)  # replacing an older save of the same path
    logger.info("saved %s model to %s (llm %s)", model.kind, final, manifest["llm_weights"])
    return final


def write_manifest(
    folder: Path, kind: str, config: ModelConfig, llm_embedded: bool, vision_embedded: bool
) -> dict:
    """`vlora_config.json`: what a folder holds and how to rebuild the model from it."""
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "model": config.model_dump(mode="json"),
        "llm_weights": "embedded" if llm_embedded else "referenced",
        "vision_weights": "embedded" if vision_embedded else "referenced",
    }
    (folder / CONFIG_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_checkpoint_config(path: str | Path) -> dict:
    config_path = Path(path) / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{path} is not a VLoRA checkpoint (no {CONFIG_FILE})")
    manifest = json.loads(config_path.read_text())
    version = manifest.get("format_version")
    if manifest.get("format") != FORMAT or version not in READABLE_VERSIONS:
        raise ValueError(
            f"{config_path}: unsupported checkpoint format {manifest.get('format')} "
            f"v{version} (this version reads v{', v'.join(map(str, READABLE_VERSIONS))})"
        )
    if version == 1:
        # written before the generator fields existed: per-type inputs, PyTorch-default init
        generator = manifest["model"].setdefault("generator", {})
        generator.setdefault("shared_input", False)
        generator.setdefault("init_scheme", "pytorch_default")
    return manifest


def build_model(cls: type[Any], path: str | Path, manifest: dict | None = None) -> Any:
    """Rebuild the model saved at `path` as `cls` (a `MultimodalModel` subclass of the folder's
    kind); `manifest` is `read_checkpoint_config(path)` when the caller has read it already."""
    root = Path(path).resolve()
    manifest = manifest or read_checkpoint_config(root)
    if manifest["kind"] != cls.kind:
        raise TypeError(f"{path} holds a '{manifest['kind']}' model, not '{cls.kind}'")
    config = ModelConfig.model_validate(manifest["model"])
    if manifest["llm_weights"] == "embedded":
        config.llm.source = str(root / "llm")
        config.llm.revision = None
    vision = build_vision_encoder(config.vision)
    if manifest["vision_weights"] == "embedded":
        vision.load_state_dict(load_file(root / VISION_FILE), strict=True)
    llm = build_llm(config.llm)
    tokenizer = load_tokenizer(str(root / "tokenizer"))
    model = cls(config, vision, llm, tokenizer)
    model.llm_modified = manifest["llm_weights"] == "embedded"
    tensors = load_file(root / BRIDGE_FILE)
    for name, module in model.bridge_modules().items():
        prefix = f"{name}."
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        module.load_state_dict(own, strict=True)
    return model
