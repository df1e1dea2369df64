"""The configuration reference (docs/configuration.md), generated from the config models.

    python -m pipelines.config.reference            # rewrites docs/configuration.md
    python -m pipelines.config.reference --check    # exit 1 when the file is not current

Every field's description is its documentation: this page only lays them out, one table per
section (the run config, then the model config that `preset` and `model.*` overrides resolve to).
A test keeps the committed page equal to what this writes.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

HEADER = """# Configuration reference

Generated from the field descriptions of the config models by `python -m
pipelines.config.reference`; do not edit by hand (a test checks that it is current).

A run is one `PipelineConfig` (a YAML file, or a named config in `pipelines/run_configs/`), with
`--set section.field=value` overrides (values are YAML). Unknown fields are errors that name the
field. The model architecture comes from `preset` (`vlora presets`), with `model.*` overrides
merged into it by dotted path (`--set model.generator.rank=32`); its fields are in the second part.
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a).replace("'", "`") for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.default is PydanticUndefined:
        return "*required*" if field.default_factory is None else "(see section)"
    value = field.default
    if isinstance(value, BaseModel):
        return "(see section)"
    text = "null" if value is None else repr(value).replace("'", "")
    return f"`{text}`".replace("|", "\\|")


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The config models a field holds (a union of sources gives each variant)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _section(path: str, model: type[BaseModel], out: list[str]) -> None:
    doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    rows, nested = [], []
    for name, field in model.model_fields.items():
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(
            f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {description} |"
        )
        nested += [(f"{path}.{name}" if path else name, m) for m in _models_in(field.annotation)]
    out.append(f"## `{path or 'PipelineConfig'}`" + (f" ({model.__name__})" if path else ""))
    if doc and not doc.startswith(("Base class", "A BaseModel")):
        out.append(doc)
    out.append("| field | type | default | description |\n|---|---|---|---|\n" + "\n".join(rows))
    for child_path, child in nested:
        kind = child.model_fields.get("kind")
        label = child_path if kind is None else f"{child_path} (kind: {kind.default})"
        _section(label, child, out)


def render() -> str:
    from pipelines.config.pipeline import PipelineConfig
    from vlora.config import ModelConfig

    out = [HEADER.strip()]
    _section("", PipelineConfig, out)
    out.append("# The model (`preset` + `model.*` overrides)")
    _section("model", ModelConfig, out)
    return "\n\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="Only check that the file is current.")
    parser.add_argument("--out", default=str(REFERENCE))
    args = parser.parse_args(argv)
    text = render()
    path = Path(args.out)
    if args.check:
        current = path.is_file() and path.read_text() == text
        print(
            f"{path}: {'current' if current else 'out of date (python -m pipelines.config.reference)'}"
        )
        return 0 if current else 1
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
