"""The `vlora` command: library-level tasks (no Ray, Prefect or DeepSpeed needed).

    vlora presets
    vlora generate --model DIR_OR_PRESET --image FILE --prompt TEXT
    vlora flops --preset NAME --text-tokens C [--visual-tokens L] [--json]
    vlora score --benchmark KEY --data FILE.tsv --predictions FILE.jsonl
    vlora data inspect-sft --data FILE.json --tokenizer DIR_OR_PRESET [--json]
    vlora convert-release SRC DST [--base-llm ID] [--allow-pickle]

Pipeline stages run with `python -m pipelines <stage>`; the Prefect flows with `python -m flows`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from vlora.utils.env import apply_offline_defaults


def load_model(spec: str, design: str = "vlora"):
    """A saved model folder, or a preset name (built fresh, untrained)."""
    from vlora.auto import load_pretrained
    from vlora.baseline import InputSpaceModel
    from vlora.checkpoint import CONFIG_FILE
    from vlora.model import VLoRAModel
    from vlora.presets import PRESETS

    if (Path(spec) / CONFIG_FILE).is_file():
        return load_pretrained(spec)
    if spec in PRESETS:
        cls = VLoRAModel if design == "vlora" else InputSpaceModel
        return cls.from_preset(spec)
    raise SystemExit(
        f"--model: '{spec}' is neither a saved model folder (with {CONFIG_FILE}) nor a preset; "
        f"presets: {', '.join(PRESETS.names())}"
    )


def cmd_presets(args: argparse.Namespace) -> int:
    from vlora.presets import PRESETS, get_preset

    for name in PRESETS.names():
        print(f"{name:<22} {get_preset(name).description}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from PIL import Image

    model = load_model(args.model, args.design)
    model.eval()
    image = None
    if args.image:
        try:
            image = Image.open(args.image)
            image.load()
        except (OSError, ValueError) as err:
            raise SystemExit(f"--image: cannot read {args.image}: {err}") from None
    kwargs = {"delta_mode": args.delta_mode} if model.kind == "vlora" else {}
    (answer,) = model.generate_text(
        [args.prompt],
        images=[image],
        max_new_tokens=args.max_new_tokens,
        template=args.template,
        **kwargs,
    )
    print(answer)
    return 0


def cmd_flops(args: argparse.Namespace) -> int:
    from vlora.flops import cost_for_preset

    report = cost_for_preset(args.preset, args.text_tokens, args.visual_tokens, args.mode)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        label = (
            f"input-space, L={report.visual_tokens}" if report.design == "input_space" else "VLoRA"
        )
        print(
            f"{args.preset} ({label}, C={report.text_tokens}, {report.mode}): "
            f"{report.gflops:,.1f} GFLOPs in the LLM"
        )
        if report.design == "vlora":
            print(f"generator (per image, counted apart): {report.generator_gflops:,.1f} GFLOPs")
    return 0


def cmd_convert_release(args: argparse.Namespace) -> int:
    from vlora.release import convert_release

    report = convert_release(
        args.src,
        args.dst,
        base_llm=args.base_llm,
        allow_pickle=args.allow_pickle,
        dtype=args.dtype,
    )
    print(json.dumps(report.to_dict()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlora", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="Log at INFO level.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("presets", help="List the model presets.")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("generate", help="Answer a prompt about an image.")
    p.add_argument("--model", required=True, help="Saved model folder or preset name.")
    p.add_argument("--image", help="Image file (omit for a text-only prompt).")
    p.add_argument("--prompt", required=True, help="The question or instruction.")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--template", default=None, help="Conversation template (default: model's).")
    p.add_argument(
        "--design",
        choices=["vlora", "input_space"],
        default="vlora",
        help="Which design to build when --model is a preset.",
    )
    p.add_argument(
        "--delta-mode",
        choices=["auto", "merged", "factorised"],
        default="auto",
        help="VLoRA only: merge the image's deltas into the weights or keep them factorised.",
    )
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("flops", help="The paper's LLM cost model for a preset.")
    p.add_argument("--preset", required=True)
    p.add_argument("--text-tokens", type=int, required=True, help="Text tokens C.")
    p.add_argument(
        "--visual-tokens",
        type=int,
        default=None,
        help="Visual tokens L: gives the input-space (LLaVA) cost; omit for VLoRA's.",
    )
    p.add_argument("--mode", choices=["inference", "training"], default="inference")
    p.add_argument("--json", action="store_true", help="Print one JSON object.")
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser(
        "convert-release",
        help="Convert the authors' released checkpoint (e.g. feipengma/VLoRA-7b-v1) to ours.",
        description="Convert a checkpoint of the authors' release (their LLaVA fork) into a "
        "folder that VLoRAModel.from_pretrained loads; see vlora/release.py for the mapping.",
    )
    p.add_argument("src", metavar="SRC", help="Local folder with the release's files, or a hub id.")
    p.add_argument("dst", metavar="DST", help="Output folder (written atomically).")
    p.add_argument(
        "--base-llm",
        default=None,
        help="For a generator-only (pre-training) checkpoint: the LLM it was trained on "
        "(the release: lmsys/vicuna-7b-v1.5).",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="Read *.bin weights with torch.load(weights_only=True) when no *.safetensors exist.",
    )
    p.add_argument(
        "--dtype",
        choices=["bfloat16", "float32", "float16"],
        default="bfloat16",
        help="Parameter dtype the converted LLM loads in (the release trained in bf16).",
    )
    p.set_defaults(func=cmd_convert_release)

    for register in _extension_subparsers():
        register(sub)
    return parser


def _extension_subparsers() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Subcommands owned by other library packages (scoring, data inspection)."""
    registrars = []
    try:
        from vlora.eval.cli import add_score_subparser

        registrars.append(add_score_subparser)
    except ImportError:  # pragma: no cover - the eval package ships with the library
        pass
    try:
        from vlora.data.cli import add_data_subparser

        registrars.append(add_data_subparser)
    except ImportError:  # pragma: no cover
        pass
    return registrars


def main(argv: Sequence[str] | None = None) -> int:
    apply_offline_defaults()
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from vlora.factories import UnknownNameError

    try:
        return int(args.func(args) or 0)
    except (UnknownNameError, ValueError, FileNotFoundError) as err:
        print(f"vlora {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
