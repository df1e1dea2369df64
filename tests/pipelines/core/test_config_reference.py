"""docs/configuration.md is generated from the config models and current; every field is
documented (its description is its help text)."""

from __future__ import annotations

from pydantic import BaseModel

from pipelines.config import PipelineConfig
from pipelines.config.reference import REFERENCE, _models_in, main, render
from vlora.config import ModelConfig


def test_committed_reference_is_current() -> None:
    assert REFERENCE.read_text() == render(), "run: python -m pipelines.config.reference"


def test_check_mode_reports_a_stale_file(tmp_path, capsys) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text("old\n")
    assert main(["--check", "--out", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().out
    assert main(["--out", str(stale)]) == 0
    assert main(["--check", "--out", str(stale)]) == 0


def _fields(model: type[BaseModel], path: str = "") -> list[tuple[str, object]]:
    found = []
    for name, field in model.model_fields.items():
        found.append((f"{path}{name}", field))
        for child in _models_in(field.annotation):
            found += _fields(child, f"{path}{name}.")
    return found


def test_every_field_has_a_description() -> None:
    undocumented = [
        path
        for root in (PipelineConfig, ModelConfig)
        for path, field in _fields(root)
        if not field.description and not path.endswith(".kind")  # the discriminator
    ]
    assert undocumented == []


def test_reference_lists_nested_and_union_sections() -> None:
    text = render()
    for heading in ("## `pretrain` (TrainConfig)", "## `download.sft (kind: easyvqa)`"):
        assert heading in text
    assert "| `seed` | int | `0` |" in text and "## `model.generator` (GeneratorConfig)" in text
