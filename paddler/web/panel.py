"""The admin panel's JSON and SSE endpoints: the cluster live, the desired state to view and
edit (the same validation as ``SetDesiredState``), and a prompt playground that streams a
conversation through the same relay, checks and buffer as every other API. With an admin key
every route needs a session (see ``admin_session``); on every route the request's Host and
Origin are checked (see ``request_checks``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Collection
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response, StreamingResponse

from paddler.balancer.agent_registry import AgentRegistry, RegisteredAgent
from paddler.balancer.generation_relay import GenerationRelay
from paddler.balancer.management_servicer import describe_pool
from paddler.balancer.metrics import BalancerMetrics
from paddler.balancer.model_routes import ModelRoutes
from paddler.balancer.rollout import Rollout
from paddler.balancer.slot_dispatcher import SlotDispatcher
from paddler.balancer.state_store import StateStore
from paddler.common.concurrency_limit import ConcurrencyLimit, LimitReachedError
from paddler.common.context_sources import context_source_label
from paddler.common.errors import InvalidArgumentError, ModelNotFoundError
from paddler.common.guards import Guard
from paddler.common.request_context import bind_request
from paddler.web.admin_session import AdminSessionMiddleware, AdminSessions, add_sign_in
from paddler.web.app import API
from paddler.web.pages import STATIC, as_dict, error_response, page, refused
from paddler.web.playground import PlaygroundRequest, generation_input, reply_events
from paddler.web.request_checks import RequestChecksMiddleware, allowed_host_names
from paddler.web.state_routes import add_state_routes

# How often the live view refreshes when nothing changes (throughput moves on its own).
TICK_S = 1.0


def add_panel(
    app: FastAPI,
    *,
    registry: AgentRegistry,
    dispatcher: SlotDispatcher,
    states: StateStore,
    rollout: Rollout,
    relay: GenerationRelay,
    routes: ModelRoutes,
    metrics: BalancerMetrics,
    stopping: asyncio.Event,
    admin: Guard | None,
    address: str,
    watchers: ConcurrencyLimit,
    allowed_hosts: Collection[str] = (),
) -> None:
    """The panel's page, assets and endpoints on ``app``; live views end once ``stopping``
    is set, so an open tab does not hold the balancer's shutdown for its grace period.

    With ``admin`` (the admin key's guard) every route but the sign-in page's needs a session
    or the key. Requests must name this server in their Host: an IP address, localhost, the
    host of ``address`` (where the web server listens) or one of ``allowed_hosts``.
    """
    if admin is not None:
        sessions = AdminSessions(admin)
        add_sign_in(app, sessions, metrics.credential_refused)
        app.add_middleware(
            AdminSessionMiddleware, sessions=sessions, on_refused=metrics.credential_refused
        )
    # Added last, so it runs first: a refused Host or Origin gets nothing else, its body unread.
    app.add_middleware(
        RequestChecksMiddleware, allowed_names=allowed_host_names(address, allowed_hosts)
    )

    async def refused_body(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        first = error.errors()[0]
        field = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return refused(field, f"{field}: {first.get('msg', 'invalid request')}")

    app.add_exception_handler(RequestValidationError, refused_body)

    @app.get("/", include_in_schema=False)
    async def panel() -> FileResponse:
        return page("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        path = STATIC / name
        if path.parent != STATIC or not path.is_file():
            return error_response(404, f"no asset {name!r}")
        return FileResponse(path)

    @app.get("/api/session")
    async def session() -> dict[str, bool]:
        """Whether the panel is behind the admin key (then it offers to log out)."""
        return {"admin_key": admin is not None}

    @app.get("/api/events")
    async def events(request: Request) -> Response:
        """The cluster as SSE: a snapshot now, on every change, and every second; 429 past
        ``--max-watchers`` live views."""
        if watchers.held >= watchers.limit:
            return error_response(429, f"{watchers.held} live views run already (--max-watchers)")
        snapshots = _snapshots(
            request,
            registry,
            dispatcher,
            routes=routes,
            rollout=rollout,
            metrics=metrics,
            stopping=stopping,
            watchers=watchers,
        )
        return StreamingResponse(snapshots, media_type="text/event-stream")

    add_state_routes(app, states, rollout)

    @app.post("/api/generate")
    async def generate(body: PlaygroundRequest) -> Response:
        """The reply as SSE: ``{"text"}`` pieces, then ``{"summary"}`` or ``{"error"}``; a
        request the checks refuse gets a 400 naming the field."""
        try:
            with metrics.refusals(API, "generate"):
                route = routes.resolve(body.model)
                generation = generation_input(body)
        except InvalidArgumentError as error:
            return refused(error.violations[0].field, error.message)
        except ModelNotFoundError as error:
            return error_response(404, error.message, "model")
        request_id = uuid.uuid4().hex
        bind_request(request_id=request_id, streamed=True)
        return StreamingResponse(
            reply_events(relay, generation, request_id, route), media_type="text/event-stream"
        )


def _agent(agent: RegisteredAgent, now: float) -> dict[str, Any]:
    status = agent.status
    return {
        "name": agent.name,
        "address": agent.address,
        "pool": agent.pool,
        "model": status.model,
        "context": status.context_size,
        "context_source": context_source_label(status.context_source),
        "slots_busy": agent.busy_slots,
        "slots_total": status.slots_total,
        "claimed": agent.claims,
        "ready": status.ready,
        "applied_version": status.applied_state_version,
        "rolling": agent.rolling,
        "issues": list(status.issues),
        "download": {
            "done": status.download.bytes_done,
            "total": status.download.bytes_total,
        }
        if status.HasField("download")
        else None,
        "last_seen_s": round(now - agent.last_status_at, 1),
    }


async def _snapshots(
    request: Request,
    registry: AgentRegistry,
    dispatcher: SlotDispatcher,
    *,
    routes: ModelRoutes,
    rollout: Rollout,
    metrics: BalancerMetrics,
    stopping: asyncio.Event,
    watchers: ConcurrencyLimit,
) -> AsyncIterator[str]:
    try:
        held = watchers.hold()
        held.__enter__()
    except LimitReachedError as error:  # another view took the last place meanwhile
        yield f"data: {json.dumps({'error': error.message})}\n\n"
        return
    changed = asyncio.Event()
    stop_listening = registry.listen(changed.set)
    previous = (time.monotonic(), metrics.pieces_relayed)
    try:
        while not stopping.is_set() and not await request.is_disconnected():
            changed.clear()
            now = time.monotonic()
            tokens = metrics.pieces_relayed
            rate = (tokens - previous[1]) / max(now - previous[0], 1e-6)
            if now - previous[0] >= TICK_S:
                previous = (now, tokens)
            snapshot = {
                "agents": [_agent(agent, now) for agent in registry.agents()],
                "buffered": dispatcher.buffered,
                "buffer_capacity": dispatcher.capacity,
                "pieces_per_second": round(rate, 1),
                "rollout": as_dict(rollout.progress()),
                "pools": [
                    as_dict(describe_pool(name, registry, rollout, dispatcher))
                    for name in routes.pools()
                ],
            }
            yield f"data: {json.dumps(snapshot)}\n\n"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), TICK_S)
    finally:
        stop_listening()
        held.__exit__(None, None, None)
