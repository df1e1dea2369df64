"""`model` overrides change only the fields they name, however they are written."""

from __future__ import annotations

import pytest

from pipelines.config import load_pipeline_config
from vlora.presets import get_preset


def test_set_nested_model_field_keeps_the_rest_of_the_preset_section() -> None:
    # `--set model.generator.rank=32` arrives as {"generator": {"rank": 32}}; it once replaced the
    # local preset's generator (h_p=128, N=2) with the paper-size defaults (512, 8)
    config = load_pipeline_config("local", ["model.generator.rank=32"])
    preset = get_preset("smollm2-dinov2").model.generator
    generator = config.model_config_for_run().generator
    assert generator.rank == 32
    assert generator.model_dump(exclude={"rank"}) == preset.model_dump(exclude={"rank"})
    assert config.model_config_for_run().vision.image_size == 112  # local.yaml's own override


def test_dotted_and_nested_spellings_build_the_same_model() -> None:
    dotted = load_pipeline_config("local", []).model_copy(
        update={"model": {"vision.image_size": 112, "generator.hidden_size": 256}}
    )
    nested = load_pipeline_config("local", ["model.generator.hidden_size=256"])
    assert dotted.model_config_for_run() == nested.model_config_for_run()


def test_unknown_model_field_is_named() -> None:
    with pytest.raises(ValueError, match=r"model\.generator\.rnak"):
        load_pipeline_config("local", ["model.generator.rnak=32"])
