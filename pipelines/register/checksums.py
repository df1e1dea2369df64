"""SHA-256 of every file in a model folder, and the check that a copy still matches them.

The checksum list is itself hashed and that digest stored on the registry entry, so neither a
changed weight file nor a rewritten list goes unnoticed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

CHECKSUM_FILE = "checksums.sha256.json"
_CHUNK = 1 << 20


class ChecksumError(RuntimeError):
    """A registered model's files differ from the checksums recorded when it was registered."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def folder_checksums(root: str | Path) -> dict[str, str]:
    """Relative POSIX path → SHA-256 for every file under `root`, sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): file_sha256(p) for p in files}


def checksums_json(checksums: dict[str, str]) -> bytes:
    """The canonical bytes written to CHECKSUM_FILE (their digest goes on the registry entry)."""
    return (json.dumps(checksums, indent=1, sort_keys=True) + "\n").encode()


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_checksums(root: str | Path, expected: dict[str, str]) -> None:
    """Raise ChecksumError naming every missing, changed or unexpected file under `root`."""
    actual = folder_checksums(root)
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    changed = sorted(p for p in set(expected) & set(actual) if expected[p] != actual[p])
    if missing or extra or changed:
        parts = []
        if changed:
            parts.append(f"changed: {changed}")
        if missing:
            parts.append(f"missing: {missing}")
        if extra:
            parts.append(f"unexpected: {extra}")
        raise ChecksumError(
            f"{root} does not match its registered checksums ({'; '.join(parts)}); the copy in "
            "the artifact store is corrupt or was modified after registration"
        )
