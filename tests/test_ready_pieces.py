"""A stream sends what is ready: text pieces queued behind the one being sent go out joined in
one message, in order, and a piece alone goes out alone at once (no wait for more)."""

from __future__ import annotations

import asyncio

from paddler.agent.generation_job import Event, Failed, Finished, take_ready
from paddler.common.errors import InternalError
from paddler.v1 import generation_pb2

DONE = Finished(generation_pb2.FINISH_REASON_MAX_TOKENS, 5, 4, 0, 0.1)


def _queue(*events: Event) -> asyncio.Queue[Event]:
    queue: asyncio.Queue[Event] = asyncio.Queue()
    for event in events:
        queue.put_nowait(event)
    return queue


def test_a_piece_alone_goes_out_alone() -> None:
    queue = _queue()
    assert take_ready("Hello", queue) == ("Hello", None)
    assert queue.empty()


def test_queued_pieces_go_out_joined_in_order_up_to_the_summary() -> None:
    queue = _queue(" wor", "ld", "!", DONE, "never")
    assert take_ready("Hello", queue) == ("Hello world!", DONE)
    assert queue.get_nowait() == "never"  # what follows the summary is left where it was


def test_a_failure_behind_queued_pieces_is_not_lost() -> None:
    failure = Failed(InternalError("boom"))
    queue = _queue(" there", failure)
    assert take_ready("Hi", queue) == ("Hi there", failure)
    assert queue.empty()
