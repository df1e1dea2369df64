"""Where MLflow keeps runs and artifacts: one experiment lookup shared by training and registry.

With the local default (a SQLite tracking store in the workdir), MLflow would put artifacts under
`./mlruns` of whatever directory the process happens to run in; every experiment we create names
its artifact location explicitly instead, next to the database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The id of experiment `name`, created with `artifact_location` when it does not exist."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:
        # Another process (a parallel stage, a retried task) created it in between.
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id
