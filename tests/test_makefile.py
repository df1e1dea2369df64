"""The Makefile's exported environment is what the README promises (offline, no telemetry)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from vlora.utils.env import OFFLINE_DEFAULTS

ROOT = Path(__file__).resolve().parent.parent


def test_make_exports_every_offline_default_with_its_value(tmp_path) -> None:
    # a second makefile adds a target that prints the environment our Makefile exports
    probe = tmp_path / "probe.mk"
    probe.write_text("_print_env:\n\t@env\n")
    out = subprocess.run(
        ["make", "-s", "--no-print-directory", "-f", "Makefile", "-f", str(probe), "_print_env"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    exported = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    promised = {k: v for k, v in OFFLINE_DEFAULTS.items() if k in (ROOT / "Makefile").read_text()}
    assert len(promised) >= 8
    assert {k: exported.get(k) for k in promised} == promised
