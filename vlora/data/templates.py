"""Conversation templates rendered as segments that know whether they are supervised.

A rendered conversation is a list of `Segment(text, supervised)`. Tokenising segment by segment
and concatenating gives labels that line up with the text by construction (LLaVA instead
tokenises the whole string and re-derives lengths, which is where its silent "tokenization
mismatch" masking comes from). Inference renders the same segments, so train and test agree.

Templates:
- `vicuna_v1` (LLaVA-v1.5 / VLoRA SFT): "{system} USER: <image>\\n{q} ASSISTANT: {a}</s>USER: …"
- `plain` (pre-training): "<image>{caption}\\n"; BOS is added by the tokeniser step.
- `chatml` (SmolLM2-Instruct, Qwen2): "<|im_start|>user\\n{q}<|im_end|>\\n<|im_start|>assistant\\n…"
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Literal

from vlora.factories import NamedFactories

Role = Literal["user", "assistant"]

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
)


@dataclass(frozen=True)
class Segment:
    text: str
    supervised: bool = False


@dataclass(frozen=True)
class Turn:
    role: Role
    text: str


class ConversationTemplate(abc.ABC):
    """Renders turns into segments; `eos` is the end-of-turn text that closes an answer."""

    name: str = ""
    eos: str = ""
    add_bos: bool = True  # prepend the tokenizer's BOS (False where the template opens itself)

    @abc.abstractmethod
    def render(self, turns: list[Turn], add_generation_prompt: bool = False) -> list[Segment]:
        """Turns → segments; with `add_generation_prompt` the text ends where the answer starts."""

    def prompt(self, question: str) -> str:
        """The generation prompt for a single user question."""
        segments = self.render([Turn("user", question)], add_generation_prompt=True)
        return "".join(s.text for s in segments)


class VicunaV1Template(ConversationTemplate):
    name = "vicuna_v1"
    eos = "</s>"

    def __init__(self, system: str = VICUNA_SYSTEM) -> None:
        self.system = system

    def render(self, turns: list[Turn], add_generation_prompt: bool = False) -> list[Segment]:
        segments = [Segment(self.system + " ")]
        for turn in turns:
            if turn.role == "user":
                segments.append(Segment(f"USER: {turn.text} ASSISTANT:"))
            else:
                # The answer and its end-of-turn token are what the model is trained to produce.
                segments.append(Segment(f" {turn.text}{self.eos}", supervised=True))
        if turns and turns[-1].role == "assistant" and add_generation_prompt:
            raise ValueError("add_generation_prompt needs the last turn to be the user's")
        return segments


class ChatMLTemplate(ConversationTemplate):
    name = "chatml"
    eos = "<|im_end|>"
    add_bos = False  # SmolLM2's "BOS" is <|im_start|>, which the template already writes

    def __init__(self, system: str | None = None) -> None:
        self.system = system

    def render(self, turns: list[Turn], add_generation_prompt: bool = False) -> list[Segment]:
        segments = []
        if self.system:
            segments.append(Segment(f"<|im_start|>system\n{self.system}<|im_end|>\n"))
        for turn in turns:
            if turn.role == "user":
                segments.append(
                    Segment(f"<|im_start|>user\n{turn.text}<|im_end|>\n<|im_start|>assistant\n")
                )
            else:
                segments.append(Segment(f"{turn.text}{self.eos}", supervised=True))
                segments.append(Segment("\n"))
        return segments


class PlainTemplate(ConversationTemplate):
    """Pre-training: the image (placeholder) then the caption and a newline, all supervised
    except the placeholder; the user turn holds only the image placeholder."""

    name = "plain"
    eos = "\n"

    def render(self, turns: list[Turn], add_generation_prompt: bool = False) -> list[Segment]:
        segments = []
        for turn in turns:
            if turn.role == "user":
                segments.append(Segment(turn.text))
            else:
                segments.append(Segment(turn.text + self.eos, supervised=True))
        return segments


TEMPLATES: NamedFactories[ConversationTemplate] = NamedFactories("conversation template")
TEMPLATES.register("vicuna_v1")(VicunaV1Template)
TEMPLATES.register("chatml")(ChatMLTemplate)
TEMPLATES.register("plain")(PlainTemplate)


def get_template(name: str) -> ConversationTemplate:
    return TEMPLATES.get(name)
