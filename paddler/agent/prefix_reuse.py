"""Where a request's cached prompt prefix comes from when it starts on a slot: the slot's own
cache, the host-memory prompt store, or another slot, busy or free, that holds more of it (its
KV state copied across, as llama-server's unified KV cache shares a system prompt between
slots). Used from the engine thread only."""

from __future__ import annotations

import ctypes
import enum
from collections.abc import Sequence

import llama_cpp as llama

from paddler.agent.prompt_store import MIN_STORED_TOKENS, PromptStore
from paddler.agent.slot import Slot, common_prefix_length

MIN_COPIED_TOKENS = 32
"""Prompt tokens another slot must hold beyond the chosen slot's own for a copy: a copy moves
the other slot's whole sequence, so a few tokens are not worth it."""


class Source(enum.Enum):
    """Where the prefix a slot holds for its new request came from."""

    SLOT = "slot"
    STORE = "store"
    COPY = "copy"


def take_longest_prefix(
    store: PromptStore | None,
    context: llama.llama_context_p,
    slot: Slot,
    slots: Sequence[Slot],
    prompt: list[int],
) -> tuple[int, Source]:
    """Before ``slot`` starts on ``prompt``, load into it the longest prefix of ``prompt`` to
    be had: another slot's (copied when it holds ``MIN_COPIED_TOKENS`` more and the copy fits
    the store's capacity), a stored prompt's, or its own. A cache the slot is about to lose goes
    into the store first. Returns how much of ``prompt`` the slot now holds, and from where."""
    shared = common_prefix_length(slot.cached, prompt)
    if store is None:  # no host memory for prompts: nothing to restore or copy through
        return shared, Source.SLOT
    donor, donated = _longest_other(slots, slot, prompt)
    key, stored = store.longest(prompt)
    if donor is not None and donated >= max(stored, shared + MIN_COPIED_TOKENS):
        size = llama.llama_state_seq_get_size(context, donor.seq_id)
        state = (ctypes.c_uint8 * size)() if 0 < size <= store.capacity_bytes else None
        if state and llama.llama_state_seq_get_data(context, state, size, donor.seq_id) == size:
            _keep_losing(store, context, slot, 0)
            if llama.llama_state_seq_set_data(context, state, size, slot.seq_id):
                slot.cached = list(donor.cached)
                return donated, Source.COPY
            slot.cached = []  # the slot's sequence may be half written: start it over
            llama.llama_memory_seq_rm(llama.llama_get_memory(context), slot.seq_id, -1, -1)
            return 0, Source.SLOT
    if stored <= shared:
        _keep_losing(store, context, slot, shared)
        return shared, Source.SLOT
    _keep_losing(store, context, slot, 0)
    slot.cached = store.restore(context, key, slot.seq_id)
    return min(stored, len(slot.cached)), Source.STORE if slot.cached else Source.SLOT


def _longest_other(slots: Sequence[Slot], slot: Slot, prompt: list[int]) -> tuple[Slot | None, int]:
    """The other slot sharing the longest prefix with ``prompt``, and that length."""
    best, length = None, 0
    for other in slots:
        if other is not slot and other.cached:
            shared = common_prefix_length(other.cached, prompt)
            if shared > length:
                best, length = other, shared
    return best, length


def _keep_losing(store: PromptStore, context: llama.llama_context_p, slot: Slot, kept: int) -> None:
    """Store the slot's cache when what it loses beyond its first ``kept`` tokens is worth it."""
    if len(slot.cached) - kept >= MIN_STORED_TOKENS:
        store.save(context, slot.seq_id, slot.cached, slot.prefixes)
