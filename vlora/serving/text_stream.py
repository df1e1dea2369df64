"""Generated tokens → text deltas, with stop strings, for streaming and non-streaming alike.

The text of a request is decoded from all its generated tokens at every step (answers are short;
this is negligible next to a decode step) and only what can no longer change is released:

- text that could be the beginning of a stop string is held back until it is not (or is);
- a trailing U+FFFD (a UTF-8 character split across byte-level tokens) is held back;
- when a stop string appears, the text ends right before it and the request finishes.

A non-streamed answer is the concatenation of the same deltas, so both are equal by construction.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

_REPLACEMENT = "\ufffd"


class TextStream:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self._hold = max((len(s) for s in stop), default=1) - 1
        self.tokens: list[int] = []
        self.emitted = ""
        self.stopped = False  # a stop string was found

    def _decode(self) -> str:
        return self.tokenizer.decode(
            self.tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def _find_stop(self, text: str) -> int | None:
        # a stop string can only newly appear where it overlaps text not yet emitted
        start = max(0, len(self.emitted) - self._hold)
        found = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
        return min(found) if found else None

    def add(self, token: int, last: bool = False) -> str:
        """Append one generated token; returns the text released by it. `last`: the request
        ends after this token, so nothing is held back."""
        self.tokens.append(token)
        text = self._decode()
        stop_at = self._find_stop(text) if self.stop else None
        if stop_at is not None:
            self.stopped = True
            text, last = text[:stop_at], True
        if not text.startswith(self.emitted):
            # decoding is not prefix-stable at this token (rare, tokenizer-dependent): release
            # nothing until it is again; what was released stays the answer
            return ""
        end = len(text)
        if not last:
            end -= self._hold if self.stop else 0
            while end > len(self.emitted) and text[end - 1] == _REPLACEMENT:
                end -= 1
        delta = text[len(self.emitted) : max(end, len(self.emitted))]
        self.emitted += delta
        return delta

    def finish(self) -> str:
        """The request ended without a new token to add (a stop token): release held text."""
        text = self._decode()
        stop_at = self._find_stop(text) if self.stop else None
        if stop_at is not None:
            self.stopped, text = True, text[:stop_at]
        if not text.startswith(self.emitted):
            return ""
        delta = text[len(self.emitted) :]
        self.emitted += delta
        return delta
