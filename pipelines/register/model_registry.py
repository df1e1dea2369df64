"""MLflow Model Registry: one model version per registered checkpoint, loaded back verified.

A registration is an MLflow run (in the pipeline's experiment) holding the checkpoint folder under
`model/`, the checksum list, the pipeline config and the lineage as artifacts and the eval scores
as metrics, plus a model version whose source is that `model/` folder, tagged with what a
reviewer needs without opening the run: design, preset, source commit, upstream fingerprints,
scores and the digest of the checksum list.

Registering is idempotent: the version carries the register stage's key (`vlora.register_key`),
and a rerun with the same key, after a crash between creating the version and finishing the
stage, finds and reuses it instead of adding a duplicate.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.core.mlflow_store import ensure_experiment
from pipelines.register.checksums import (
    CHECKSUM_FILE,
    ChecksumError,
    checksums_json,
    digest_of,
    folder_checksums,
    verify_checksums,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

KEY_TAG = "vlora.register_key"
CHECKSUM_TAG = "vlora.checksums_sha256"
MODEL_ARTIFACT = "model"


@dataclass
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    source: str
    aliases: list[str] = field(default_factory=list)
    reused: bool = False

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _client(tracking_uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _find_version(client: MlflowClient, name: str, key: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None  # the registered model does not exist yet
    matches = [v for v in versions if (v.tags or {}).get(KEY_TAG) == key]
    return max(matches, key=lambda v: int(v.version)) if matches else None


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(
                name, description="VLoRA checkpoints registered by the vlora pipeline."
            )
        except MlflowException:
            client.get_registered_model(name)  # created concurrently: fine; otherwise raises


def register_checkpoint(
    *,
    tracking_uri: str,
    experiment: str,
    artifact_location: str | None,
    model_dir: str | Path,
    model_name: str,
    register_key: str,
    run_name: str,
    tags: dict[str, str],
    metrics: dict[str, float],
    documents: dict[str, Any],
    description: str = "",
    alias: str = "candidate",
) -> RegisteredVersion:
    """Register the local checkpoint folder `model_dir` as a new version (or reuse this key's).

    `documents` are JSON-serialisable objects logged as `<name>.json` run artifacts (the pipeline
    config, the lineage); `tags` go on both the run and the model version.
    """
    client = _client(tracking_uri)
    model_dir = Path(model_dir)
    existing = _find_version(client, model_name, register_key)
    if existing is not None:
        logger.info(
            "[register] %s version %s already holds this result: reusing it",
            model_name,
            existing.version,
        )
        client.set_registered_model_alias(model_name, alias, str(existing.version))
        return RegisteredVersion(
            model_name,
            str(existing.version),
            existing.run_id,
            existing.source,
            aliases=_aliases(client, model_name, existing.version),
            reused=True,
        )
    checksums = folder_checksums(model_dir)
    checksum_bytes = checksums_json(checksums)
    experiment_id = ensure_experiment(client, experiment, artifact_location)
    run = client.create_run(experiment_id, run_name=run_name)
    run_id = run.info.run_id
    try:
        all_tags = {**tags, KEY_TAG: register_key, CHECKSUM_TAG: digest_of(checksum_bytes)}
        for key, value in all_tags.items():
            client.set_tag(run_id, key, value)
        for key, value in metrics.items():
            client.log_metric(run_id, key, float(value))
        client.log_artifacts(run_id, str(model_dir), artifact_path=MODEL_ARTIFACT)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / CHECKSUM_FILE).write_bytes(checksum_bytes)
            for name, document in documents.items():
                (Path(tmp) / f"{name}.json").write_text(json.dumps(document, indent=1, default=str))
            client.log_artifacts(run_id, tmp)
        _ensure_registered_model(client, model_name)
        version = client.create_model_version(
            model_name,
            source=f"{run.info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT}",
            run_id=run_id,
            tags=all_tags,
            description=description or None,
        )
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    client.set_registered_model_alias(model_name, alias, str(version.version))
    logger.info(
        "[register] %s version %s (%d files) alias %s",
        model_name,
        version.version,
        len(checksums),
        alias,
    )
    return RegisteredVersion(
        model_name,
        str(version.version),
        run_id,
        version.source,
        aliases=_aliases(client, model_name, version.version),
    )


def _aliases(client: MlflowClient, name: str, version: str) -> list[str]:
    return sorted(client.get_model_version(name, str(version)).aliases or [])


def set_alias(tracking_uri: str, name: str, version: str, alias: str) -> list[str]:
    """Point `alias` at `version`; returns that version's aliases afterwards."""
    client = _client(tracking_uri)
    client.set_registered_model_alias(name, alias, version)
    return _aliases(client, name, version)


def _resolve(client: MlflowClient, name: str, ref: str) -> Any:
    """A version by number ('3') or alias ('production')."""
    from mlflow.exceptions import MlflowException

    try:
        if ref.isdigit():
            return client.get_model_version(name, ref)
        return client.get_model_version_by_alias(name, ref)
    except MlflowException as err:
        raise LookupError(
            f"registered model '{name}' has no version or alias '{ref}': {err.message}"
        ) from None


def load_registered_model(
    name: str, ref: str, tracking_uri: str, dst: str | Path | None = None
) -> Path:
    """Download version `ref` (number or alias) of `name` into `dst` and verify every file.

    Raises ChecksumError when a file is missing, changed or unexpected, or when the checksum list
    itself no longer matches the digest recorded on the version.
    """
    client = _client(tracking_uri)
    version = _resolve(client, name, ref)
    expected_digest = (version.tags or {}).get(CHECKSUM_TAG)
    if not expected_digest:
        raise ChecksumError(
            f"{name} version {version.version} has no {CHECKSUM_TAG} tag: it "
            "was not registered by this pipeline and cannot be verified"
        )
    dst = Path(dst or tempfile.mkdtemp(prefix=f"{name}-v{version.version}-"))
    dst.mkdir(parents=True, exist_ok=True)
    listing = Path(client.download_artifacts(version.run_id, CHECKSUM_FILE, str(dst)))
    listing_bytes = listing.read_bytes()
    listing.unlink()
    if digest_of(listing_bytes) != expected_digest:
        raise ChecksumError(
            f"{name} version {version.version}: {CHECKSUM_FILE} does not match "
            f"the digest recorded at registration ({CHECKSUM_TAG})"
        )
    model_dir = Path(client.download_artifacts(version.run_id, MODEL_ARTIFACT, str(dst)))
    verify_checksums(model_dir, json.loads(listing_bytes))
    logger.info("[registry] %s version %s verified at %s", name, version.version, model_dir)
    return model_dir


def load_registered_vlora(name: str, ref: str, tracking_uri: str, dst: str | Path | None = None):
    """The registered model, verified, as a VLoRAModel (or InputSpaceModel for the baseline)."""
    from vlora.auto import load_pretrained

    return load_pretrained(load_registered_model(name, ref, tracking_uri, dst))
