"""A served tiny checkpoint (deltas that change the answers) behind the API, in this process.

`served` is the FastAPI app over an in-process backend: the same API and generation code as the
Ray Serve deployments, without Ray, for the fast tier. The slow tests start the real command.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from pipelines.serve.api import InProcessBackend, create_app
from pipelines.serve.chat_server import ChatServer
from pipelines.serve.config import APISettings, ModelSettings
from pipelines.serve.model_source import load_model, resolve_model
from tests.vlora.serving.conftest import build, make_images
from vlora.serving import EngineConfig


def data_url(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    media = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}[fmt]
    return f"data:image/{media};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def image_message(text: str, image: Image.Image | None = None) -> dict:
    if image is None:
        return {"role": "user", "content": text}
    return {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": data_url(image)}},
            {"type": "text", "text": text},
        ],
    }


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(tmp_path_factory.mktemp("serve")) / "tiny-vlora"
    build("vlora").save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def pictures() -> list[Image.Image]:
    return make_images(6)


def make_server(checkpoint: Path, **engine) -> ChatServer:
    settings = ModelSettings(model=str(checkpoint))
    resolved = resolve_model(settings)
    model = load_model(resolved, settings)
    return ChatServer(model, resolved, EngineConfig(**engine), cache_bytes=64 * 2**20)


@pytest.fixture(scope="module")
def chat_server(tiny_checkpoint: Path):
    server = make_server(tiny_checkpoint, max_batch_size=6)
    yield server
    server.shutdown()


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def app_for(server: ChatServer, **api):
    return create_app(InProcessBackend(server), APISettings(**api))
