"""Tokenizers and feature files for the data tests, all built offline.

`llama_tokenizer(legacy)` is a real `transformers.LlamaTokenizer` (what LlamaTokenizerFast is in
transformers 5) around a BPE vocabulary trained here with `tokenizers` on a small corpus, since
`sentencepiece` is not installed and LLaMA's tokenizer.model cannot be downloaded. It reproduces
what matters for label masks of a LLaMA SentencePiece tokenizer:
- Metaspace pre-tokenisation: spaces become "▁" and belong to the *following* word, with
  prepend scheme "first" (legacy=False: a "▁" is prepended to the text, not after special
  tokens) or "always" (legacy=True, the original slow tokenizer: "</s>USER" → "</s>", "▁USER"),
  the classic source of LLaVA's "tokenization mismatch" off-by-ones;
- byte fallback: <0x00>…<0xFF> at ids 3…258, so any character round-trips;
- <unk>=0, <s>=1, </s>=2 as special tokens: "</s>" written by the vicuna_v1 template is one id;
- LLaMA's decoder (▁ → space, byte fusion, one leading space stripped).
It does not reproduce the 32K-piece vocabulary or SentencePiece's score-ordered merges, so the
segmentations of long words differ from LLaMA's; none of the checks depend on them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from vlora.config import VisionEncoderConfig
from vlora.data.features import features_to_table, write_feature_table
from vlora.presets import get_preset

CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions.",
    "USER: What is in the picture? ASSISTANT: A cat sitting on a red sofa.",
    "USER: What color is the cat? ASSISTANT: The cat is black and white.",
    "Describe the image in detail. There are two dogs playing in the park near a tree.",
    "A photo of a bus on a street in the city, with people waiting at the stop.",
]


def build_llama_tokenizer(legacy: bool = False) -> PreTrainedTokenizerBase:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
    )
    bpe.train_from_iterator(CORPUS * 10, trainer)
    learned = json.loads(bpe.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for piece, _ in sorted(learned["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges, legacy=legacy, add_bos_token=True)
    tokenizer.pad_token = tokenizer.unk_token  # as LLaVA does for LLaMA
    return tokenizer


@pytest.fixture(scope="session")
def llama_tokenizer() -> PreTrainedTokenizerBase:
    return build_llama_tokenizer(legacy=False)


@pytest.fixture(scope="session")
def llama_tokenizer_legacy() -> PreTrainedTokenizerBase:
    return build_llama_tokenizer(legacy=True)


@pytest.fixture(scope="session")
def byte_tokenizer() -> PreTrainedTokenizerFast:
    from vlora.tokenizer import build_byte_tokenizer

    return build_byte_tokenizer()


def _wrap(backend) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )


def build_straddling_tokenizer() -> PreTrainedTokenizerFast:
    """A BPE without pre-tokeniser, trained until "… ASSISTANT: Yes" is one token: that token
    covers the end of the prompt and the start of the answer (a straddling token)."""
    from tokenizers import Tokenizer, models, trainers

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", "<pad>"], show_progress=False
    )
    corpus = ["USER: Is it red? ASSISTANT: Yes"] * 50 + ["abcdefghijklmnopqrstuvwxyz ?.,:"] * 5
    corpus += ["ABCDEFGHIJKLMNOPQRSTUVWXYZ'0123456789"] * 5 + [CORPUS[0]] * 5
    bpe.train_from_iterator(corpus, trainer)
    return _wrap(bpe)


def build_no_fallback_tokenizer() -> PreTrainedTokenizerFast:
    """A LLaMA-style (Metaspace) BPE *without* byte fallback: characters outside its training
    corpus ("€") become <unk>, so their answers cannot round-trip."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    bpe.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", "<pad>"], show_progress=False
    )
    bpe.train_from_iterator(CORPUS * 10 + ["0123456789 ?!.,"], trainer)
    return _wrap(bpe)


@pytest.fixture(scope="session")
def straddling_tokenizer() -> PreTrainedTokenizerFast:
    return build_straddling_tokenizer()


@pytest.fixture(scope="session")
def no_fallback_tokenizer() -> PreTrainedTokenizerFast:
    return build_no_fallback_tokenizer()


@pytest.fixture(scope="session")
def tiny_encoder() -> VisionEncoderConfig:
    return get_preset("tiny-llama").model.vision  # 16 patches × 32


FeatureWriter = Callable[..., dict[str, np.ndarray]]


@pytest.fixture
def write_features(tiny_encoder: VisionEncoderConfig) -> FeatureWriter:
    """write_features(path, keys, captions=None, seed=0) → {key: float16 [L·d_v]} as written."""

    def write(
        path: Path, keys: list[str], captions: list[str] | None = None, seed: int = 0
    ) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        shape = (len(keys), tiny_encoder.num_patches, tiny_encoder.feature_dim)
        values = rng.standard_normal(shape).astype(np.float16)
        table = features_to_table(keys, values, tiny_encoder, captions=captions)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_feature_table(table, str(path))
        return {k: v.reshape(-1) for k, v in zip(keys, values, strict=True)}

    return write
