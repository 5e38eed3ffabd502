"""Generated text split into reasoning and reply text, as it streams: `<think>` tags."""

from __future__ import annotations

import enum

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


class Kind(enum.Enum):
    """What a piece of generated text is."""

    REASONING = "reasoning"
    TEXT = "text"


class _State(enum.Enum):
    OPENING = enum.auto()  # the reply may still open with <think> (whitespace before it)
    REASONING_START = enum.auto()  # whitespace before the reasoning is dropped
    REASONING = enum.auto()
    TEXT_START = enum.auto()  # reasoning ended: whitespace before the text is dropped
    TEXT = enum.auto()


def starts_in_reasoning(prompt: str) -> bool | None:
    """Where a prompt leaves the reply: True when it ends inside an opened `<think>` (the
    template prefilled it), False when it ends with `</think>` (reasoning closed before the
    reply, as templates do with thinking off), None when the reply may open with one."""
    tail = prompt.rstrip()
    if tail.endswith(OPEN_TAG):
        return True
    if tail.endswith(CLOSE_TAG):
        return False
    return None


class ReasoningSplit:
    """Feed text pieces in order; get back (kind, text) pieces, the tags and the whitespace
    around them removed. A tag split across pieces is held until it is whole or cannot be."""

    def __init__(self, in_reasoning: bool | None) -> None:
        self._state = {
            True: _State.REASONING_START,
            False: _State.TEXT_START,
            None: _State.OPENING,
        }[in_reasoning]
        self._held = ""

    @property
    def in_reasoning(self) -> bool:
        """Whether text fed now would be reasoning."""
        return self._state in (_State.REASONING_START, _State.REASONING)

    def feed(self, text: str) -> list[tuple[Kind, str]]:
        """The pieces ``text`` completes, in order."""
        out: list[tuple[Kind, str]] = []
        text = self._held + text
        self._held = ""
        while text:
            text = self._step(text, out)
        return out

    def flush(self) -> list[tuple[Kind, str]]:
        """What is held when the generation ends: a partial tag is text of its own kind."""
        held, self._held = self._held, ""
        if not held:
            return []
        if self._state is _State.REASONING:
            return [(Kind.REASONING, held)]
        return [(Kind.TEXT, held)]

    def _step(self, text: str, out: list[tuple[Kind, str]]) -> str:
        """Consume some of ``text`` in the current state; return the rest."""
        if self._state is _State.TEXT:
            out.append((Kind.TEXT, text))
            return ""
        if self._state in (_State.TEXT_START, _State.REASONING_START):
            stripped = text.lstrip()
            if stripped:
                self._state = _State.TEXT if self._state is _State.TEXT_START else _State.REASONING
            return stripped
        if self._state is _State.OPENING:
            stripped = text.lstrip()
            if stripped.startswith(OPEN_TAG):
                self._state = _State.REASONING_START
                return stripped[len(OPEN_TAG) :]
            if OPEN_TAG.startswith(stripped):  # all whitespace, or a tag still arriving
                self._held = text
                return ""
            self._state = _State.TEXT
            return text
        end = text.find(CLOSE_TAG)
        if end >= 0:
            if reasoning := text[:end].rstrip():
                out.append((Kind.REASONING, reasoning))
            self._state = _State.TEXT_START
            return text[end + len(CLOSE_TAG) :]
        keep = _held_length(text)
        if sent := text[: len(text) - keep]:
            out.append((Kind.REASONING, sent))
        self._held = text[len(text) - keep :]
        return ""


def _held_length(text: str) -> int:
    """How much of ``text``'s end to hold in reasoning: a start of the closing tag, and the
    whitespace before it (dropped if the tag follows)."""
    keep = 0
    for length in range(min(len(text), len(CLOSE_TAG) - 1), 0, -1):
        if CLOSE_TAG.startswith(text[len(text) - length :]):
            keep = length
            break
    body = text[: len(text) - keep]
    return keep + len(body) - len(body.rstrip())
