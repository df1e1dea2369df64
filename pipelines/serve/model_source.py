"""MODEL → a loaded model: a checkpoint folder, a preset, or a registered version.

- a folder holding `vlora_config.json` (what `save_pretrained` and the training stages write);
- a preset name (`tiny-llama`, `smollm2-dinov2`, …): random init for the bridge, seeded, so
  every replica (and the encoder and generation deployments) builds the same weights;
- `models:/NAME@ALIAS` or `models:/NAME/VERSION`: the MLflow registry of `tracking_uri`,
  downloaded and verified against the checksums recorded at registration
  (`pipelines.register`). A version that fails the check is refused with the reason.

`resolve_model` runs where the application is built (the CLI, `serve run`, the Serve
controller): it pins an alias to its version number, so every replica loads the same version
even if the alias moves during a rollout, and fails early on a bad MODEL. `load_model` runs in
each replica. Verified registry copies are kept per node (`registry_cache`).

`conditioning_version` identifies what turns an image into conditioning (the vision encoder and
the bridge, i.e. config + bridge weights): the factor cache's key, with the image's hash.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.serve.config import ModelSettings

logger = logging.getLogger(__name__)

_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


class ModelSourceError(ValueError):
    """MODEL cannot be served (unknown, unreadable, or failing its checksums)."""


@dataclass(frozen=True)
class ResolvedModel:
    spec: str  # as given
    source: str  # "folder", "preset" or "registry"
    design: str  # "vlora" or "input_space"
    served_name: str
    version: str  # shown in /v1/models and /health
    conditioning_version: str
    folder: str | None = None  # folder sources (and registry ones once fetched)
    preset: str | None = None
    registry_name: str | None = None
    registry_version: str | None = None
    tracking_uri: str | None = None
    preset_seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def parse_registry_uri(spec: str) -> tuple[str, str] | None:
    """models:/NAME@ALIAS or models:/NAME/VERSION → (name, alias or version); else None."""
    if not spec.startswith("models:/"):
        return None
    match = _REGISTRY_URI.match(spec)
    if not match:
        raise ModelSourceError(f"model: '{spec}' is not models:/NAME@ALIAS or models:/NAME/VERSION")
    return match["name"], match["alias"] or match["version"]


def _hash_files(paths: list[Path], extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def folder_conditioning_version(folder: Path) -> str:
    from vlora.checkpoint import BRIDGE_FILE, CONFIG_FILE, VISION_FILE

    return "sha256:" + _hash_files(
        [folder / CONFIG_FILE, folder / BRIDGE_FILE, folder / VISION_FILE]
    )


def _checkpoint_kind(folder: Path) -> str:
    from vlora.checkpoint import read_checkpoint_config

    try:
        return read_checkpoint_config(folder)["kind"]
    except (FileNotFoundError, ValueError) as err:
        raise ModelSourceError(f"model: {err}") from None


def _check_design(settings: ModelSettings, kind: str) -> str:
    if settings.design and settings.design != kind:
        raise ModelSourceError(
            f"model: '{settings.model}' holds a '{kind}' model; --design {settings.design} "
            "does not match"
        )
    return kind


def resolve_model(settings: ModelSettings, verify: bool = True) -> ResolvedModel:
    """Check MODEL and pin what will be loaded (see the module docstring)."""
    spec = settings.model
    registry = parse_registry_uri(spec)
    if registry is not None:
        if not settings.tracking_uri:
            raise ModelSourceError(f"model: '{spec}' needs --tracking-uri (the MLflow registry)")
        from pipelines.register.checksums import ChecksumError
        from pipelines.serve.registry_cache import fetch_verified, resolve_version

        name, ref = registry
        try:
            version, digest, tagged_design = resolve_version(name, ref, settings.tracking_uri)
            folder = None
            if verify:  # download and check every file now: a bad version is refused here
                folder = fetch_verified(name, version, settings.tracking_uri, settings.cache_dir)
        except (LookupError, ChecksumError) as err:
            raise ModelSourceError(f"model: {err}") from None
        kind = _check_design(
            settings, _checkpoint_kind(folder) if folder else tagged_design or "vlora"
        )
        return ResolvedModel(
            spec=spec,
            source="registry",
            design=kind,
            served_name=settings.served_model_name or name,
            version=f"models:/{name}/{version}",
            conditioning_version=f"models:/{name}/{version}#{digest[:16]}",
            folder=str(folder) if folder else None,
            registry_name=name,
            registry_version=version,
            tracking_uri=settings.tracking_uri,
        )
    path = Path(spec).expanduser()
    if path.is_dir():
        kind = _check_design(settings, _checkpoint_kind(path))
        version = folder_conditioning_version(path.resolve())
        return ResolvedModel(
            spec=spec,
            source="folder",
            design=kind,
            served_name=settings.served_model_name or path.resolve().name,
            version=f"{path.resolve()} ({version})",
            conditioning_version=version,
            folder=str(path.resolve()),
        )
    from vlora.factories import UnknownNameError
    from vlora.presets import PRESETS

    try:
        PRESETS.get(spec)
    except UnknownNameError as err:
        raise ModelSourceError(
            f"model: '{spec}' is neither a checkpoint folder, a registry URI "
            f"(models:/NAME@ALIAS) nor a preset ({err})"
        ) from None
    design = settings.design or "vlora"
    version = f"preset:{spec}:{design}:seed{settings.preset_seed}"
    return ResolvedModel(
        spec=spec,
        source="preset",
        design=design,
        served_name=settings.served_model_name or spec,
        version=version,
        conditioning_version=version,
        preset=spec,
        preset_seed=settings.preset_seed,
    )


def load_model(resolved: ResolvedModel, settings: ModelSettings):
    """Build the resolved model in eval mode on the settings' device and dtype."""
    import torch

    from vlora.eval.generate_fn import resolve_device, resolve_dtype

    if resolved.source == "preset":
        from vlora.baseline import InputSpaceModel
        from vlora.model import VLoRAModel

        cls = VLoRAModel if resolved.design == "vlora" else InputSpaceModel
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(resolved.preset_seed)  # the bridge's random init
            model = cls.from_preset(resolved.preset)
    else:
        folder = resolved.folder
        if resolved.source == "registry":
            from pipelines.serve.registry_cache import fetch_verified

            folder = str(
                fetch_verified(
                    str(resolved.registry_name),
                    str(resolved.registry_version),
                    str(resolved.tracking_uri),
                    settings.cache_dir,
                )
            )
        from vlora.auto import load_pretrained

        model = load_pretrained(folder)
    device = resolve_device(settings.device)
    model.to(device=device, dtype=resolve_dtype(settings.dtype, device))
    model.requires_grad_(False)
    return model.eval()
