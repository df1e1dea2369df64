"""MLflow metrics from the rank-0 worker, and the loss-curve plot drawn by the driver."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pipelines.training.plan import TrainPlan

logger = logging.getLogger(__name__)


class MetricsLogger:
    """Logs to the MLflow run created by the driver (no-op without one)."""

    def __init__(self, plan: TrainPlan) -> None:
        self.client = None
        self.run_id = plan.mlflow_run_id
        if plan.mlflow_tracking_uri and plan.mlflow_run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=plan.mlflow_tracking_uri)

    def log(self, metrics: dict[str, float], step: int) -> None:
        logger.info(
            "step %d: %s",
            step,
            ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "step"),
        )
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v == v]  # no NaN
        self.client.log_batch(self.run_id, metrics=batch)

    def close(self) -> None:
        self.client = None


def start_mlflow_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    params: dict,
    artifact_location: str | None = None,
) -> str:
    from mlflow.tracking import MlflowClient

    from pipelines.core.mlflow_store import ensure_experiment

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = ensure_experiment(client, experiment, artifact_location)
    run = client.create_run(experiment_id, run_name=run_name)
    flat = {k: str(v)[:500] for k, v in params.items()}
    for key, value in flat.items():
        client.log_param(run.info.run_id, key, value)
    return run.info.run_id


def finish_mlflow_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=tracking_uri).set_terminated(run_id, status=status)


def metric_history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    history = MlflowClient(tracking_uri=tracking_uri).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in history)


def plot_loss_curve(points: list[tuple[int, float]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=120)
    if points:
        steps, values = zip(*points, strict=True)
        axis.plot(steps, values, marker="o" if len(points) < 30 else None)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("training loss")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
