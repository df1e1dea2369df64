"""A chat (system, user and assistant turns) → prompt token ids in the model's own template.

The image goes where the user put it: the turn's text holds the model's image token there
(`<image>`), which becomes IMAGE_TOKEN_INDEX, as in training and in `BatchGenerator`, so a
question served over the API is tokenised exactly as the eval stage tokenises it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerBase

from vlora.data.templates import ConversationTemplate, Turn, get_template
from vlora.data.tokenize import encode_conversation
from vlora.serving.requests import RequestError

ChatRole = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatTurn:
    role: ChatRole
    text: str


def chat_template(name: str, system: str | None) -> ConversationTemplate:
    """The model's template, with the chat's system prompt when it has one."""
    template = get_template(name)
    if system is None:
        return template
    if not hasattr(template, "system"):
        raise RequestError(f"this model's '{name}' template has no system prompt")
    return type(template)(system=system)  # type: ignore[call-arg]


def encode_chat(
    tokenizer: PreTrainedTokenizerBase,
    template_name: str,
    turns: Sequence[ChatTurn],
    image_token: str,
) -> list[int]:
    """Prompt ids ending where the assistant's answer starts."""
    system_texts = [t.text for t in turns if t.role == "system"]
    dialogue: list[Turn] = []
    for turn in turns:
        if turn.role == "system":
            continue
        if dialogue and dialogue[-1].role == turn.role:
            # consecutive messages of one role read as one (OpenAI accepts them)
            dialogue[-1] = Turn(turn.role, f"{dialogue[-1].text}\n{turn.text}")
        else:
            dialogue.append(Turn(turn.role, turn.text))
    if not dialogue or dialogue[-1].role != "user":
        raise RequestError("the last message must be the user's")
    if dialogue[0].role != "user":
        raise RequestError("the conversation must start with a user message")
    template = chat_template(template_name, "\n".join(system_texts) if system_texts else None)
    return encode_conversation(tokenizer, template, dialogue, image_token, True).input_ids
