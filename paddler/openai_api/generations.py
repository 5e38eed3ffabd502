"""The ``n`` generations of one OpenAI request, run at once on the cluster's slots through the
balancer's relay, their events merged as they come."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from paddler.balancer.generation_relay import GenerationRelay
from paddler.balancer.model_routes import DEFAULT_ROUTE, Route
from paddler.v1 import agent_pb2, generation_pb2

API = "openai"
# Events of one choice that may wait for the client (several choices share one queue).
BACKLOG_PER_CHOICE = 64


@dataclass(frozen=True)
class Event:
    """A piece of text or reasoning, a tool call or the summary of choice ``index``."""

    index: int
    text: str = ""
    reasoning: str = ""
    summary: generation_pb2.GenerationSummary | None = None
    tool_call: generation_pb2.ToolCall | None = None


async def _choice(
    relay: GenerationRelay,
    generation: generation_pb2.GenerationInput,
    request_id: str,
    index: int,
    route: Route,
) -> AsyncGenerator[Event, None]:
    """One choice's events, straight from the relay."""
    forwarded = agent_pb2.GenerateRequest(request_id=request_id, input=generation)
    async for chunk in relay.stream(forwarded, None, API, route):
        response = agent_pb2.GenerateResponse.FromString(chunk)
        kind = response.WhichOneof("event")
        if kind == "summary":
            yield Event(index, summary=response.summary)
        elif kind == "tool_call":
            yield Event(index, tool_call=response.tool_call)
        elif kind == "reasoning":
            yield Event(index, reasoning=response.reasoning)
        else:
            yield Event(index, text=response.text)


async def _one(
    choice: AsyncIterator[Event], events: asyncio.Queue[Event | BaseException | None]
) -> None:
    try:
        async for event in choice:
            await events.put(event)
    except Exception as error:  # noqa: BLE001 - handed to the reader, which raises it
        await events.put(error)
    else:
        await events.put(None)  # this choice is over


async def generate(
    relay: GenerationRelay,
    generations: list[generation_pb2.GenerationInput],
    request_id: str,
    route: Route = DEFAULT_ROUTE,
) -> AsyncIterator[Event]:
    """Every choice's events in the order they arrive; the first failure is raised (the other
    choices are cancelled), and leaving early cancels them all, freeing their slots. A single
    choice is read in the caller's own task (no queue between the relay and the client).
    ``route`` names the pool (and model) that serves every choice; several choices are all
    served by one model, even during a rollout."""
    if len(generations) == 1:
        choice = _choice(relay, generations[0], request_id, 0, route)
        async with contextlib.aclosing(choice) as single:
            async for event in single:
                yield event
        return
    # Bounded: a client that stops reading stops the relays too, so their idle timeout cuts them.
    events: asyncio.Queue[Event | BaseException | None] = asyncio.Queue(
        BACKLOG_PER_CHOICE * len(generations)
    )
    if not route.model:
        route = Route(route.pool, relay.most_served_model(route.pool))
    tasks = [
        asyncio.create_task(
            _one(_choice(relay, generation, f"{request_id}-{index}", index, route), events)
        )
        for index, generation in enumerate(generations)
    ]
    try:
        running = len(tasks)
        while running:
            item = await events.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                running -= 1
                continue
            yield item
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass(frozen=True)
class Choices:
    """Every choice of a finished request: its text, reasoning, tool calls and summary, in
    choice order."""

    texts: list[str]
    reasonings: list[str]
    tool_calls: list[list[generation_pb2.ToolCall]]
    summaries: list[generation_pb2.GenerationSummary]
    model: str


def gather_choices(events: list[Event], count: int, model: str) -> Choices:
    """The ``count`` choices the events make up; ``model`` as the summaries name it."""
    texts = [""] * count
    reasonings = [""] * count
    calls: list[list[generation_pb2.ToolCall]] = [[] for _ in range(count)]
    summaries: dict[int, generation_pb2.GenerationSummary] = {}
    for event in events:
        texts[event.index] += event.text
        reasonings[event.index] += event.reasoning
        if event.tool_call is not None:
            calls[event.index].append(event.tool_call)
        if event.summary is not None:
            summaries[event.index] = event.summary
            model = event.summary.model or model
    return Choices(texts, reasonings, calls, [summaries[index] for index in range(count)], model)
