"""The model registry: registering exported checkpoints in MLflow and loading them back verified.

`register_checkpoint` creates a model version with its config, lineage, metrics, source commit and
file checksums; `load_registered_model` downloads a version by alias or number and refuses it when
any file differs from what was registered.
"""

from pipelines.register.checksums import ChecksumError, folder_checksums, verify_checksums
from pipelines.register.model_registry import (
    RegisteredVersion,
    load_registered_model,
    load_registered_vlora,
    register_checkpoint,
    set_alias,
)

__all__ = [
    "ChecksumError",
    "RegisteredVersion",
    "folder_checksums",
    "load_registered_model",
    "load_registered_vlora",
    "register_checkpoint",
    "set_alias",
    "verify_checksums",
]
