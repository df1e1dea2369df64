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
    generator = config.resolved_model.generator
    assert generator.rank == 32
    assert generator.model_dump(exclude={"rank"}) == preset.model_dump(exclude={"rank"})
    assert config.resolved_model.vision.image_size == 112  # local.yaml's own override


def test_dotted_and_nested_spellings_build_the_same_model() -> None:
    dotted = load_pipeline_config("local", []).model_copy(
        update={"model": {"vision.image_size": 112, "generator.hidden_size": 256}}
    )
    nested = load_pipeline_config("local", ["model.generator.hidden_size=256"])
    assert dotted.resolved_model == nested.resolved_model


def test_unknown_model_field_is_named() -> None:
    with pytest.raises(ValueError, match=r"model\.generator\.rnak"):
        load_pipeline_config("local", ["model.generator.rnak=32"])


def test_rank_set_in_yaml_reaches_the_layer_typed(tmp_path) -> None:
    # YAML override → PipelineConfig.resolved_model → TrainPlan → the worker's model, with no
    # dict round trip on the driver: the plan holds the very ModelConfig the config resolved
    from pipelines.training.launcher import prepare_plan
    from pipelines.training.plan import TrainPlan
    from pipelines.training.worker import build_model
    from vlora.config import ModelConfig

    config_file = tmp_path / "run.yaml"
    config_file.write_text(
        f"name: typed\npreset: tiny-llama\nworkdir: {tmp_path / 'work'}\n"
        "model:\n  generator:\n    rank: 3\n"
    )
    config = load_pipeline_config(config_file)
    assert isinstance(config.resolved_model, ModelConfig)
    assert config.resolved_model.generator.rank == 3
    assert config.resolved_model is config.resolved_model  # resolved once, not per call

    plan, _ = prepare_plan(
        "pretrain",
        config,
        config.pretrain.model_copy(update={"max_steps": 1}),
        str(tmp_path / "pretrain"),
        num_rows=None,
        init_checkpoint=None,
        use_gpu=False,
    )
    assert plan.fresh_model_config is config.resolved_model
    # what a Ray worker receives (JSON) validates back into the same types
    received = TrainPlan.model_validate(plan.model_dump(mode="json"))
    assert isinstance(received.fresh_model_config, ModelConfig)
    assert received.fresh_model_config == config.resolved_model

    model = build_model(received)
    # W_s of every delta type is [k, r, out]: the rank the YAML set
    assert {w_s.shape[1] for w_s in model.generator.w_s.values()} == {3}


def test_resolved_model_follows_a_changed_override() -> None:
    config = load_pipeline_config("smoke", [])
    before = config.resolved_model.generator.rank
    config.model = {"generator.rank": before + 1}  # validated assignment resolves again
    assert config.resolved_model.generator.rank == before + 1
    copied = config.model_copy(update={"model": {"generator.rank": before + 2}})
    assert copied.resolved_model.generator.rank == before + 2
    assert config.resolved_model.generator.rank == before + 1
