"""Toolkit adapters import and work without VLMEvalKit or lmms-eval installed."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from vlora.eval.adapters import lmms_eval as lmms_adapter
from vlora.eval.adapters import vlmevalkit as vlmevalkit_adapter
from vlora.eval.adapters.lmms_eval import VLoRALmms, truncate_at_stop
from vlora.eval.adapters.vlmevalkit import VLoRAVLMEval
from vlora.eval.prompts import VICUNA_V1_SYSTEM


class FakeModel:
    """Stands in for the VLoRA model: records its inputs, answers with a fixed string."""

    def __init__(self, answer: str = "B") -> None:
        self.answer = answer
        self.calls: list[tuple[str, Image.Image | None]] = []

    def generate_from_text(self, prompt: str, image: Image.Image | None) -> str:
        self.calls.append((prompt, image))
        return self.answer

    def __call__(self, *args: object) -> str:  # like a torch module's forward: must not be used
        raise AssertionError("adapters must call generate_from_text, not the module")


def test_adapters_import_without_toolkits() -> None:
    if importlib.util.find_spec("vlmeval") is None:
        assert vlmevalkit_adapter.VLMEVALKIT_AVAILABLE is False
        assert VLoRAVLMEval.__mro__[1] is object
    if importlib.util.find_spec("lmms_eval") is None:
        assert lmms_adapter.LMMS_EVAL_AVAILABLE is False
        assert VLoRALmms.__mro__[1] is object


def test_vlmevalkit_generate_inner_uses_first_image_and_2024_wrapping(tmp_path: Path) -> None:
    first, second = tmp_path / "1.png", tmp_path / "2.png"
    Image.new("RGB", (5, 3), "red").save(first)
    Image.new("RGB", (2, 2), "blue").save(second)
    model = FakeModel()
    adapter = VLoRAVLMEval(model=model)
    message = [
        {"type": "image", "value": str(first)},
        {"type": "image", "value": str(second)},
        {"type": "text", "value": "Which?\nA. x\nB. y"},
    ]
    assert adapter.generate_inner(message, dataset="MMBench_DEV_EN") == "B"
    prompt, image = model.calls[0]
    assert prompt == f"{VICUNA_V1_SYSTEM} USER: <image>\nWhich?\nA. x\nB. y ASSISTANT:"
    assert image is not None
    assert image.size == (5, 3)


def test_vlmevalkit_prompt_formats_and_custom_prompt_rule() -> None:
    seen: list[str] = []
    adapter = VLoRAVLMEval(
        generate_fn=lambda prompt, image: seen.append(prompt) or "Yes", prompt_format="user"
    )
    adapter.generate_inner([{"type": "text", "value": "Is it? Please answer yes or no."}], "MME")
    assert seen == ["Is it? Please answer yes or no."]  # no image, no placeholder
    assert adapter.use_custom_prompt("MMBench_DEV_EN")
    assert adapter.use_custom_prompt("MMMU_DEV_VAL")
    assert not adapter.use_custom_prompt("MME")
    assert not adapter.use_custom_prompt("HallusionBench")


def test_vlmevalkit_build_prompt_with_an_injected_dump_image() -> None:
    adapter = VLoRAVLMEval(generate_fn=lambda prompt, image: "A")
    adapter.dump_image = lambda line, dataset: ["/tmp/x.png"]  # VLMEvalKit installs this
    line = {"question": "Q?", "hint": float("nan"), "A": "x", "B": "y", "C": float("nan")}
    message = adapter.build_prompt(line, "ScienceQA_TEST")
    assert message == [
        {"type": "image", "value": "/tmp/x.png"},
        {
            "type": "text",
            "value": "Q?\nA. x\nB. y\nAnswer with the option's letter from the given choices directly.",
        },
    ]


def test_exactly_one_model_source_is_required() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        VLoRAVLMEval()
    with pytest.raises(ValueError, match="exactly one"):
        VLoRALmms(generate_fn=lambda p, i: "", model=FakeModel())
    with pytest.raises(TypeError, match="only for factory"):
        VLoRALmms(generate_fn=lambda p, i: "", checkpoint="x")


def make_generate_fn(answer: str) -> Callable[[str, Image.Image | None], str]:
    """Factory used through the ``"module:callable"`` string below."""
    return lambda prompt, image: f"{answer}</s>ignored"


def test_lmms_generate_until_with_factory_and_stop_strings() -> None:
    adapter = VLoRALmms(factory=f"{__name__}:make_generate_fn", answer="Yes", batch_size="1")
    image = Image.new("RGB", (3, 3))
    adapter.task_dict = {"mme": {"test": {7: {"image": image}}}}
    request = SimpleNamespace(
        args=("Is it red?", {"until": ["</s>"]}, lambda doc: [doc["image"]], 7, "mme", "test")
    )
    assert adapter.generate_until([request]) == ["Yes"]
    with pytest.raises(NotImplementedError):
        adapter.loglikelihood([request])


def make_generate_fn_on(device: str = "auto") -> Callable[[str, Image.Image | None], str]:
    """A factory with a ``device`` argument, like ``vlora.eval.generate_fn.make_generate_fn``."""
    return lambda prompt, image: device


def test_lmms_device_goes_to_a_factory_that_takes_it() -> None:
    # lmms-eval's --device (and a device= in --model_args) arrive as the adapter's own argument
    on_cpu = VLoRALmms(factory=f"{__name__}:make_generate_fn_on", device="cpu")
    assert on_cpu.generate_fn("Q", None) == "cpu"
    assert VLoRALmms(factory=f"{__name__}:make_generate_fn_on").generate_fn("Q", None) == "auto"
    # a factory without one is called as before
    plain = VLoRALmms(factory=f"{__name__}:make_generate_fn", answer="A", device="cpu")
    assert plain.generate_fn("Q", None) == "A</s>ignored"


def test_lmms_prompt_places_one_image_token() -> None:
    seen: list[tuple[str, object]] = []
    adapter = VLoRALmms(generate_fn=lambda prompt, image: seen.append((prompt, image)) or "A")
    adapter.task_dict = {"t": {"s": {0: {}}}}
    images = [Image.new("RGB", (2, 2)), Image.new("RGB", (4, 4))]
    request = SimpleNamespace(args=("Q", {}, lambda doc: images, 0, "t", "s"))
    adapter.generate_until([request])
    prompt, image = seen[0]
    assert prompt == f"{VICUNA_V1_SYSTEM} USER: <image>\nQ ASSISTANT:"
    assert image is not None
    assert image.size == (2, 2)


def test_truncate_at_stop() -> None:
    assert truncate_at_stop("abc\n\nxyz", ["\n\n", "y"]) == "abc"
    assert truncate_at_stop("abc", None) == "abc"
    assert truncate_at_stop("abc", "b") == "a"
