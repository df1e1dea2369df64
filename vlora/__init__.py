"""VLoRA model library: image features become per-sample low-rank weight deltas inside an LLM.

The heavy modules load on first use, so `import vlora` stays cheap (config, CLI help).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "InputSpaceModel",
    "ModelConfig",
    "VLoRAModel",
    "get_preset",
    "load_pretrained",
    "preset_names",
]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from vlora.auto import load_pretrained
    from vlora.baseline import InputSpaceModel
    from vlora.config import ModelConfig
    from vlora.model import VLoRAModel
    from vlora.presets import get_preset, preset_names

_LAZY = {
    "VLoRAModel": "vlora.model",
    "InputSpaceModel": "vlora.baseline",
    "ModelConfig": "vlora.config",
    "get_preset": "vlora.presets",
    "load_pretrained": "vlora.auto",
    "preset_names": "vlora.presets",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vlora' has no attribute {name!r}")
