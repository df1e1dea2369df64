# The two commands of a fresh machine (see README): `make run` and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
# Offline and telemetry-free by default (README "Offline and telemetry"). One variable per
# `export` line: `export A=1 B=2` would set A to "1 B=2" and leave B unset.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1
export WANDB_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export NO_ALBUMENTATIONS_UPDATE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run test test-fast test-slow test-cluster lint format

setup:
	bash scripts/setup.sh

run: setup
	$(PY) -m flows local

# CI runs exactly this: the fast tier, the slow and end-to-end tiers, then the multi-node
# cluster tier in a process of its own (it sets the cluster's environment for its drivers).
test: setup
	$(PY) -m pytest -m "not slow and not e2e"
	$(PY) -m pytest -m "(slow or e2e) and not cluster"
	$(PY) -m pytest -m cluster

test-fast: setup
	$(PY) -m pytest -m "not slow and not e2e"

test-slow: setup
	$(PY) -m pytest -m "(slow or e2e) and not cluster"

test-cluster: setup
	$(PY) -m pytest -m cluster

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: setup
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .
