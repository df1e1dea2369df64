"""Settings, MODEL resolution, the command line and the application builder: no Ray, no server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from pipelines.serve.cli import build_parser, port_is_free, settings_from_cli
from pipelines.serve.config import ModelSettings, ServeSettings, settings_from_args
from pipelines.serve.model_source import ModelSourceError, parse_registry_uri, resolve_model
from pipelines.serve.served_eval import chat_messages
from tests.vlora.serving.conftest import build, make_images, prompt_ids, reference_tokens
from vlora.serving import EngineConfig, GenerationEngine, GenerationRequest, SamplingParams
from vlora.serving.conditioning import ImageConditioner, release_image_modules

REPO = Path(__file__).resolve().parents[3]


def test_cli_flags_sets_and_config_file(tmp_path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("llm: {engine: {max_waiting: 7}}\napi: {default_max_tokens: 9}\n")
    args = build_parser().parse_args(
        [
            "--model", "tiny-llama",
            "--port", "8123",
            "--api-key", "k",
            "--max-batch-size", "4",
            "--llm-replicas", "2",
            "--allow-image-urls",
            "--config", str(config),
            "--set", "api.default_max_tokens=11",
            "--set", "encoder.cache_mb=1.5",
        ]
    )  # fmt: skip
    settings = settings_from_cli(args)
    assert settings.model.model == "tiny-llama" and settings.http.port == 8123
    assert settings.llm.engine.max_batch_size == 4 and settings.llm.engine.max_waiting == 7
    assert settings.llm.num_replicas == 2 and settings.api.allow_image_urls
    assert settings.api.default_max_tokens == 11  # --set beats the file
    assert settings.encoder.cache_mb == 1.5 and settings.api.api_key == "k"


def test_settings_refuse_what_is_wrong() -> None:
    with pytest.raises(ValidationError, match="reachable beyond this machine"):
        ServeSettings(model=ModelSettings(model="tiny-llama"), http={"host": "0.0.0.0"})
    ServeSettings(
        model=ModelSettings(model="tiny-llama"), http={"host": "0.0.0.0"}, api={"api_key_env": "K"}
    )
    with pytest.raises(ValidationError, match="extra"):
        settings_from_args({"model": "tiny-llama", "llm.engine.max_batchsize": 4})
    with pytest.raises(ValidationError, match="default_max_tokens"):
        settings_from_args({"model": "tiny-llama", "api.default_max_tokens": 9000})
    # builder args as `serve run` passes them: strings
    settings = settings_from_args({"model": "tiny-llama", "llm.engine.max_batch_size": "3"})
    assert settings.llm.engine == EngineConfig(max_batch_size=3)


def test_model_sources(tiny_checkpoint) -> None:
    folder = resolve_model(ModelSettings(model=str(tiny_checkpoint)))
    assert (folder.source, folder.design, folder.served_name) == ("folder", "vlora", "tiny-vlora")
    assert folder.conditioning_version.startswith("sha256:")
    preset = resolve_model(ModelSettings(model="tiny-llama", design="input_space"))
    assert (preset.source, preset.design) == ("preset", "input_space")
    with pytest.raises(ModelSourceError, match="neither a checkpoint folder"):
        resolve_model(ModelSettings(model="no-such-model"))
    with pytest.raises(ModelSourceError, match="does not match"):
        resolve_model(ModelSettings(model=str(tiny_checkpoint), design="input_space"))
    assert parse_registry_uri("models:/vlora-local@production") == ("vlora-local", "production")
    assert parse_registry_uri("models:/vlora-local/3") == ("vlora-local", "3")
    assert parse_registry_uri("tiny-llama") is None
    with pytest.raises(ModelSourceError, match="not models:/NAME@ALIAS"):
        parse_registry_uri("models:/a/b/c")


def test_presets_build_the_same_weights_in_every_replica() -> None:
    from pipelines.serve.model_source import load_model

    settings = ModelSettings(model="tiny-llama")
    first, second = (load_model(resolve_model(settings), settings) for _ in range(2))
    for a, b in zip(first.generator.parameters(), second.generator.parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_builder_applies_resources_and_replicas() -> None:
    from pipelines.serve.app import build_app

    app = build_app(
        {
            "model": "tiny-llama",
            "encoder.num_replicas": 2,
            "llm.autoscaling": {"min_replicas": 1, "max_replicas": 3},
            "llm.num_gpus": 0,
        }
    )
    ingress = app._bound_deployment
    generator = ingress.init_args[1]._bound_deployment
    encoder = ingress.init_args[2]._bound_deployment
    assert (ingress.name, generator.name, encoder.name) == (
        "OpenAIIngress",
        "Generator",
        "ImageEncoder",
    )
    assert encoder.num_replicas == 2
    assert generator._deployment_config.autoscaling_config.max_replicas == 3
    assert generator.ray_actor_options == {"num_cpus": 2.0, "num_gpus": 0.0}


def test_released_image_modules_leave_generation_intact() -> None:
    model = build("vlora")
    image = make_images(1)[0]
    conditioning = ImageConditioner(model).encode([image])[0]
    ids = prompt_ids(model, "what?", True)
    expected = reference_tokens(model, ids, image, 6)
    assert release_image_modules(model) > 0
    with pytest.raises(RuntimeError, match="released"):
        model.vision(torch.zeros(1))
    request = GenerationRequest(
        "a", ids, SamplingParams(max_tokens=6, ignore_eos=True), conditioning
    )
    assert GenerationEngine(model).generate([request])[0].token_ids == expected


def test_chat_messages_rebuild_the_eval_prompt() -> None:
    (message,) = chat_messages("<image>\nWhat shape is it?\nAnswer briefly.", b"\x89PNG")
    assert [p["type"] for p in message["content"]] == ["image_url", "text"]
    assert message["content"][1]["text"] == "What shape is it?\nAnswer briefly."
    assert chat_messages("<image>\nhi", None) == [{"role": "user", "content": "hi"}]


def test_port_check() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert not port_is_free("127.0.0.1", busy.getsockname()[1])


@pytest.mark.slow  # three interpreter start-ups with torch and transformers
def test_pipelines_entry_point_keeps_stages_and_adds_serve() -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pipelines", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )

    served = run("serve", "--help")
    assert served.returncode == 0 and "--model" in served.stdout and "--api-key" in served.stdout
    refused = run("serve", "--model", "no-such-model")
    assert refused.returncode == 2 and "neither a checkpoint folder" in refused.stderr
    stage = run("nonsense-stage", "--config", "local")
    assert stage.returncode == 2 and "invalid choice" in stage.stderr
