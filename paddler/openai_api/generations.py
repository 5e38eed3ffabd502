"""The ``n`` generations of one OpenAI request, run at once on the cluster's slots through the
balancer's relay, their events merged as they come."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from paddler.balancer.generation_relay import GenerationRelay
from paddler.v1 import agent_pb2, generation_pb2

API = "openai"


@dataclass(frozen=True)
class Event:
    """A piece of text or the summary of choice ``index``."""

    index: int
    text: str = ""
    summary: generation_pb2.GenerationSummary | None = None


async def _one(
    relay: GenerationRelay,
    generation: generation_pb2.GenerationInput,
    request_id: str,
    index: int,
    events: asyncio.Queue[Event | BaseException | None],
) -> None:
    forwarded = agent_pb2.GenerateRequest(request_id=request_id, input=generation)
    try:
        async for chunk in relay.stream(forwarded, None, API):
            response = agent_pb2.GenerateResponse.FromString(chunk)
            if response.HasField("summary"):
                await events.put(Event(index, summary=response.summary))
            else:
                await events.put(Event(index, text=response.text))
    except Exception as error:  # noqa: BLE001 - handed to the reader, which raises it
        await events.put(error)
    else:
        await events.put(None)  # this choice is over


async def generate(
    relay: GenerationRelay, generations: list[generation_pb2.GenerationInput], request_id: str
) -> AsyncIterator[Event]:
    """Every choice's events in the order they arrive; the first failure is raised (the other
    choices are cancelled), and leaving early cancels them all, freeing their slots."""
    events: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()
    ids = [f"{request_id}-{index}" for index in range(len(generations))]
    if len(ids) == 1:
        ids = [request_id]
    tasks = [
        asyncio.create_task(_one(relay, generation, ids[index], index, events))
        for index, generation in enumerate(generations)
    ]
    try:
        running = len(tasks)
        while running:
            event = await events.get()
            if isinstance(event, BaseException):
                raise event
            if event is None:
                running -= 1
                continue
            yield event
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass(frozen=True)
class Choices:
    """Every choice of a finished request: its text and summary, in choice order."""

    texts: list[str]
    summaries: list[generation_pb2.GenerationSummary]
    model: str


def gather_choices(events: list[Event], count: int, model: str) -> Choices:
    """The ``count`` choices the events make up; ``model`` as the summaries name it."""
    texts = [""] * count
    summaries: dict[int, generation_pb2.GenerationSummary] = {}
    for event in events:
        texts[event.index] += event.text
        if event.summary is not None:
            summaries[event.index] = event.summary
            model = event.summary.model or model
    return Choices(texts, [summaries[index] for index in range(count)], model)
