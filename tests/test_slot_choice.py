"""Which free slot a prompt goes to (pure logic; the engine tests cover it on the model)."""

from __future__ import annotations

from paddler.agent.slot import SPREAD_COST_TOKENS, Slot, choose_slot


def _slots(caches: dict[int, list[int]], count: int = 8) -> list[Slot]:
    slots = [Slot(seq_id) for seq_id in range(count)]
    for seq_id, cached in caches.items():
        slots[seq_id].cached = list(cached)
    return slots


def test_empty_slots_fill_next_to_the_busy_ones() -> None:
    slots = _slots({})
    busy = [3, 4]
    free = [slot for slot in slots if slot.seq_id not in busy]
    assert choose_slot(free, busy, [1, 2, 3]).seq_id == 2  # span 2..4; 5 also gives 3, 2 is lower


def test_with_nothing_busy_the_lowest_empty_slot_wins() -> None:
    slots = _slots({})
    assert choose_slot(slots, [], [1, 2, 3]).seq_id == 0


def test_a_long_conversation_returns_to_its_own_far_slot() -> None:
    history = list(range(100, 100 + 8 * SPREAD_COST_TOKENS))
    slots = _slots({7: history})
    busy = [0]
    free = slots[1:]
    assert choose_slot(free, busy, [*history, 5, 6]).seq_id == 7


def test_stale_caches_of_similar_length_give_way_to_compactness() -> None:
    stale = {seq_id: [1, 50 + seq_id, 60 + seq_id] + [9] * seq_id for seq_id in range(8)}
    slots = _slots(stale)
    busy = [0, 1]
    free = slots[2:]
    # Slot 2 throws away the longest stale cache of 2..4 but keeps the busy ids together.
    assert choose_slot(free, busy, [1, 70, 71]).seq_id == 2


def test_a_newcomer_spares_a_long_cache_for_an_empty_slot() -> None:
    slots = _slots({1: list(range(500))})
    busy = [0]
    free = slots[1:]
    assert choose_slot(free, busy, [0, 1, 2, 900]).seq_id == 2


def test_a_short_far_cache_is_prefilled_again_next_to_the_busy_ones() -> None:
    history = list(range(100, 100 + SPREAD_COST_TOKENS))
    slots = _slots({7: history})
    busy = [0]
    free = slots[1:]
    assert choose_slot(free, busy, [*history, 5, 6]).seq_id == 1
