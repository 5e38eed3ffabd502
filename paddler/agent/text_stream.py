"""Token bytes to sendable text: whole UTF-8 characters, stop strings held back and cut."""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextStream:
    """Joins token pieces into text that never splits a character or leaks part of a stop string."""

    def __init__(self, stop: Sequence[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._held = ""

    def push(self, piece: bytes) -> tuple[str, bool]:
        """Add one token's bytes; return the text that is safe to send and whether a stop hit."""
        text = self._held + self._decoder.decode(piece)
        if not self._stop:
            self._held = ""
            return text, False
        hits = [index for index in (text.find(stop) for stop in self._stop) if index >= 0]
        if hits:
            self._held = ""
            return text[: min(hits)], True
        keep = self._longest_stop_prefix_suffix(text)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """The held text and any dangling bytes (as U+FFFD), when the sequence ends otherwise."""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text

    def _longest_stop_prefix_suffix(self, text: str) -> int:
        for length in range(min(len(text), max(len(s) for s in self._stop) - 1), 0, -1):
            tail = text[len(text) - length :]
            if any(stop.startswith(tail) for stop in self._stop):
                return length
        return 0
