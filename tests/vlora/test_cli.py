"""The `vlora` console entry point, end to end on CPU."""

from __future__ import annotations

import subprocess
import sys

from PIL import Image


def vlora(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vlora.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_generate_on_a_preset_with_an_image(tmp_path) -> None:
    image = tmp_path / "red.png"
    Image.new("RGB", (50, 30), (255, 0, 0)).save(image)
    out = vlora(
        "generate",
        "--model",
        "tiny-llama",
        "--image",
        str(image),
        "--prompt",
        "colour?",
        "--max-new-tokens",
        "3",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("\n")


def test_generate_on_a_saved_model_folder(tmp_path) -> None:
    from vlora.baseline import InputSpaceModel

    path = InputSpaceModel.from_preset("tiny-qwen2").save_pretrained(tmp_path / "m")
    out = vlora("generate", "--model", str(path), "--prompt", "hello", "--max-new-tokens", "2")
    assert out.returncode == 0, out.stderr


def test_unknown_model_and_unreadable_image_fail_clearly(tmp_path) -> None:
    out = vlora("generate", "--model", "nope", "--prompt", "x")
    assert out.returncode != 0 and "presets: " in out.stderr and "tiny-llama" in out.stderr
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    out = vlora("generate", "--model", "tiny-llama", "--image", str(bad), "--prompt", "x")
    assert out.returncode != 0 and "--image: cannot read" in out.stderr


def test_presets_lists_every_preset() -> None:
    out = vlora("presets")
    assert out.returncode == 0
    for name in ("vicuna7b-clip336", "smollm2-dinov2", "tiny-llama", "tiny-qwen2"):
        assert name in out.stdout
