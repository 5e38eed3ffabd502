"""Prompts' KV state kept in host memory once their slot is reused (llama-server's
``--cache-ram``): a request whose prompt starts with a stored one gets that prefix restored into
its slot instead of prefilled again. Used from the engine thread only."""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from dataclasses import dataclass
from itertools import count

import llama_cpp as llama

from paddler.agent.slot import common_prefix_length
from paddler.common.prefix_chain import MAX_PREFIX_HASHES

MIN_STORED_TOKENS = 32
"""A slot's cache shorter than this is not worth a copy."""


@dataclass(frozen=True)
class StoredPrompt:
    """The tokens a sequence held and its KV state, as ``llama_state_seq_get_data`` wrote it,
    and the prefix-chain links of its prompt."""

    tokens: tuple[int, ...]
    state: ctypes.Array[ctypes.c_uint8]
    prefixes: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        """Bytes of host memory the state takes."""
        return len(self.state)


class PromptStore:
    """At most ``capacity_bytes`` of stored prompts, the least recently used dropped first."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._entries: OrderedDict[int, StoredPrompt] = OrderedDict()
        self._ids = count()
        self.bytes = 0
        self.saved = 0
        self.restored = 0
        # The stored prompts' links, the most recently used first, up to the most a status
        # snapshot carries (replaced whole, so any thread may read it).
        self.recent_links: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self._entries)

    def save(
        self,
        context: llama.llama_context_p,
        seq_id: int,
        tokens: list[int],
        prefixes: tuple[int, ...] = (),
    ) -> None:
        """Copy sequence ``seq_id``'s KV state (``tokens``, whose prompt has the chain links
        ``prefixes``) in, unless a stored prompt already holds it all; stored prompts it
        extends are dropped."""
        if len(tokens) < MIN_STORED_TOKENS:
            return
        held = tuple(tokens)
        for key, entry in list(self._entries.items()):
            if entry.tokens[: len(held)] == held:
                self._entries.move_to_end(key)
                self._relink()
                return  # a stored prompt holds this one and more
            if held[: len(entry.tokens)] == entry.tokens:
                self._drop(key)  # this one holds it and more
        size = llama.llama_state_seq_get_size(context, seq_id)
        if not 0 < size <= self.capacity_bytes:
            return
        while self.bytes + size > self.capacity_bytes:
            self._drop(next(iter(self._entries)))
        state = (ctypes.c_uint8 * size)()
        if llama.llama_state_seq_get_data(context, state, size, seq_id) != size:
            return
        self._entries[next(self._ids)] = StoredPrompt(held, state, prefixes)
        self.bytes += size
        self.saved += 1
        self._relink()

    def longest(self, prompt: list[int]) -> tuple[int, int]:
        """The key of the stored prompt sharing the longest prefix with ``prompt``, and that
        length ((-1, 0) when none shares any)."""
        best, length = -1, 0
        for key, entry in self._entries.items():
            shared = common_prefix_length(entry.tokens, prompt)
            if shared > length:
                best, length = key, shared
        return best, length

    def restore(self, context: llama.llama_context_p, key: int, seq_id: int) -> list[int]:
        """Load stored prompt ``key`` into sequence ``seq_id`` (which llama.cpp clears first);
        the tokens it now holds (none when llama.cpp refused the state)."""
        entry = self._entries[key]
        self._entries.move_to_end(key)
        self._relink()
        if not llama.llama_state_seq_set_data(context, entry.state, entry.size, seq_id):
            return []
        self.restored += 1
        return list(entry.tokens)

    def _drop(self, key: int) -> None:
        self.bytes -= self._entries.pop(key).size
        self._relink()

    def _relink(self) -> None:
        links: dict[int, None] = {}
        for entry in reversed(self._entries.values()):
            links.update(dict.fromkeys(entry.prefixes))
            if len(links) >= MAX_PREFIX_HASHES:
                break
        self.recent_links = tuple(links)[:MAX_PREFIX_HASHES]
