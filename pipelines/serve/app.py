"""The Ray Serve application builder: `serve run` / `serve deploy` and `python -m pipelines serve`.

    serve run pipelines.serve.app:build_app model=tiny-llama
    serve run pipelines.serve.app:build_app model=models:/vlora-local@production \\
        model.tracking_uri=sqlite:///runs/local/mlflow.db llm.engine.max_batch_size=16
    serve deploy infra/serve/vlora.yaml          # the same builder, args from the file

Arguments are `ServeSettings` fields (dotted keys for sections). The builder checks MODEL and
pins a registry alias to its version number (`resolve_model`), so every replica of this
application loads the same version; each replica then loads and verifies it itself.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from pipelines.serve.config import ServeSettings, settings_from_args
from pipelines.serve.model_source import ResolvedModel, resolve_model


def build_application(
    settings: ServeSettings, resolved: ResolvedModel | None = None
) -> Application:
    from pipelines.serve.deployments import Generator, ImageEncoder, OpenAIIngress

    resolved = resolved or resolve_model(settings.model, verify=False)
    payload = settings.model_dump(mode="json")
    pinned = resolved.to_dict()
    encoder = ImageEncoder.options(**settings.encoder.ray_options()).bind(payload, pinned)
    generator = Generator.options(**settings.llm.ray_options()).bind(payload, pinned, encoder)
    return OpenAIIngress.options(**settings.ingress.ray_options()).bind(payload, generator, encoder)


def build_app(args: dict[str, Any]) -> Application:
    """`serve run pipelines.serve.app:build_app key=value …` (see the module docstring)."""
    return build_application(settings_from_args(args))
