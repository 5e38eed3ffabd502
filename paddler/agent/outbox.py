"""What the engine thread hands to the event loop: each request's events, once a step."""

from __future__ import annotations

import asyncio

import structlog

from paddler.agent.generation_job import Event, GenerationJob

log = structlog.get_logger(__name__)


class Outbox:
    """Events gathered during a step, delivered to their jobs' queues in one loop callback."""

    def __init__(self) -> None:
        self._events: list[tuple[GenerationJob, Event]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver on ``loop`` from now on."""
        self._loop = loop

    def put(self, job: GenerationJob, event: Event) -> None:
        """Queue ``event`` for ``job`` (engine thread only)."""
        self._events.append((job, event))

    def flush(self) -> None:
        """Hand what was queued to the event loop (engine thread only)."""
        if not self._events or self._loop is None:
            return
        events, self._events = self._events, []
        try:
            self._loop.call_soon_threadsafe(_deliver, events)
        except RuntimeError:  # the event loop is closed: nobody is left to wait for these
            log.warning("events dropped after the event loop closed", count=len(events))


def _deliver(events: list[tuple[GenerationJob, Event]]) -> None:
    for job, event in events:
        job.events.put_nowait(event)
