"""The FastAPI application of the OpenAI-compatible API: routes, request ids, errors, CORS."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from paddler.balancer.embedding_relay import EmbeddingRelay
from paddler.balancer.generation_relay import GenerationRelay
from paddler.balancer.metrics import BalancerMetrics
from paddler.balancer.model_routes import ModelRoutes
from paddler.common.body_limit import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware
from paddler.common.error_interceptor import Refused
from paddler.common.errors import PaddlerError
from paddler.common.guards import Guard
from paddler.common.http_guard import BearerGuardMiddleware
from paddler.common.off_loop import checked_off_loop
from paddler.common.request_context import CallContextMiddleware, bind_request
from paddler.openai_api import (
    chat_completions,
    completions,
    embeddings,
    response_stream,
    responses,
)
from paddler.openai_api.chat_protocol import ChatCompletionRequest
from paddler.openai_api.completion_protocol import CompletionRequest
from paddler.openai_api.errors import (
    ERROR_RESPONSES,
    body_too_large,
    error_response,
    http_error,
    paddler_error,
    stream_error_event,
    validation_error,
)
from paddler.openai_api.generations import API, Event, generate
from paddler.openai_api.model_cards import model_card
from paddler.openai_api.remote_images import RemoteImages
from paddler.openai_api.request_ids import HEADER, RequestIdMiddleware
from paddler.openai_api.responses_protocol import ResponseRequest

T = TypeVar("T")
TITLE = "Paddler OpenAI-compatible API"
# What a server logs for a client that closed the connection before the response (nginx's).
CLIENT_CLOSED_REQUEST = 499
# The client's ``user`` on the request's log lines, at most this long.
MAX_LOGGED_USER_CHARS = 64


@dataclass(frozen=True)
class OpenAISettings:
    """What ``--openai-*`` flags set."""

    model_aliases: Sequence[str] = ()
    cors_origins: Sequence[str] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Who may call (clients' API keys); None: anyone. /health stays open.
    guard: Guard | None = None
    # Hosts whose image URLs the balancer fetches (--allowed-image-host); none: data: only.
    image_hosts: Sequence[str] = ()
    on_refused: Refused | None = None


class ClientDisconnectedError(Exception):
    """The client went away before the response began."""


async def _until_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, or ClientDisconnectedError (with ``work`` cancelled, freeing its slot)
    when the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.create_task(_until_disconnect(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientDisconnectedError
    return task.result()


async def _client_gone(request: Request, error: Exception) -> Response:
    """Nobody reads this response; the generation was cancelled and its slot freed."""
    del request, error
    return Response(status_code=CLIENT_CLOSED_REQUEST)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document: FastAPI's, less the 422 it adds to every operation (a body that
    does not validate gets OpenAI's 400 here)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=TITLE, version=app.version, routes=app.routes)
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        app.openapi_schema = schema
    return app.openapi_schema


def _base_app(settings: OpenAISettings, metrics: BalancerMetrics) -> FastAPI:
    """An app with OpenAI's error mapping, request ids and CORS, and no routes yet."""
    app = FastAPI(title=TITLE, version="1")
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    async def refused_body(request: Request, error: Exception) -> Response:
        kind = "embed" if request.url.path.endswith("/embeddings") else "generate"
        metrics.refused(API, kind, "INVALID_ARGUMENT")
        return await validation_error(request, error)

    app.add_exception_handler(RequestValidationError, refused_body)
    app.add_exception_handler(PaddlerError, paddler_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ClientDisconnectedError, _client_gone)

    def too_large(scope: Scope, max_bytes: int) -> Response:
        kind = "embed" if scope["path"].endswith("/embeddings") else "generate"
        metrics.refused(API, kind, "INVALID_ARGUMENT")
        return body_too_large(scope["state"]["request_id"], max_bytes)

    # Inside CORS and request ids, so a 413 carries their headers too.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, refusal=too_large)
    if settings.guard is not None:  # outside the body limit: a stranger's body is never read
        app.add_middleware(
            BearerGuardMiddleware,
            guard=settings.guard,
            surface=API,
            refused=lambda scope, error: error_response(error, scope["state"]["request_id"]),
            open_paths=("/health",),
            on_refused=settings.on_refused,
        )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=[HEADER],
        )
    app.add_middleware(CallContextMiddleware, api=API)
    app.add_middleware(RequestIdMiddleware)
    return app


def _add_model_routes(app: FastAPI, models: ModelRoutes) -> None:
    """``/health`` and ``/v1/models``."""

    @app.get("/health", responses={503: {"description": "No agent serves."}})
    async def health() -> JSONResponse:
        """200 while at least one agent serves, 503 otherwise."""
        if models.served_models():
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "no agent serves"}, status_code=503)

    @app.get("/v1/models")
    async def list_models() -> dict[str, object]:
        """The models agents serve now, the pools and every alias, each with its pool."""
        return {"object": "list", "data": [model_card(models, name) for name in models.names()]}

    @app.get("/v1/models/{model_id}", responses={404: ERROR_RESPONSES[404]})
    async def get_model(model_id: str) -> dict[str, object]:
        """One name requests may give (listed or not: "default" too), or 404
        model_not_found."""
        return model_card(models, models.named(model_id))


def create_app(
    relay: GenerationRelay,
    embedder: EmbeddingRelay,
    models: ModelRoutes,
    settings: OpenAISettings,
    metrics: BalancerMetrics,
) -> FastAPI:
    """The app; it shares the balancer's relays (and so its dispatcher and buffer) and
    metrics."""
    app = _base_app(settings, metrics)
    remote = RemoteImages(settings.image_hosts)

    _add_model_routes(app, models)

    @app.post("/v1/chat/completions", response_model=None, responses=ERROR_RESPONSES)
    async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
        """A chat completion: one JSON object, or SSE chunks with ``stream``."""
        request_id: str = request.state.request_id
        _log_request(body.model, bool(body.stream), body.user)
        with metrics.refusals(API, "generate"):
            model = models.resolve(body.model, required=True)
            await body.inline_images(remote)
            inputs = [await checked_off_loop(body.generation_input, "input.grammar")] * body.n
        events = generate(relay, inputs, request_id, model)
        if not body.stream:
            collected = await _unless_disconnected(request, _collect(events))
            return JSONResponse(chat_completions.completion(body, request_id, collected))
        first = await _unless_disconnected(request, anext(events))
        return _sse(chat_completions.chunks(body, request_id, _prepend(first, events)), request_id)

    @app.post("/v1/completions", response_model=None, responses=ERROR_RESPONSES)
    async def create_completion(body: CompletionRequest, request: Request) -> Response:
        """A text completion per prompt and per ``n``: one JSON object, or SSE events."""
        request_id: str = request.state.request_id
        _log_request(body.model, bool(body.stream), body.user)
        with metrics.refusals(API, "generate"):
            model = models.resolve(body.model, required=True)
            inputs = await checked_off_loop(body.generation_inputs, "input.grammar")
        events = generate(relay, inputs, request_id, model)
        if not body.stream:
            collected = await _unless_disconnected(request, _collect(events))
            return JSONResponse(completions.completion(body, request_id, collected))
        first = await _unless_disconnected(request, anext(events))
        return _sse(completions.chunks(body, request_id, _prepend(first, events)), request_id)

    @app.post("/v1/responses", response_model=None, responses=ERROR_RESPONSES)
    async def create_response(body: ResponseRequest, request: Request) -> Response:
        """A model response (text): one JSON object, or the Responses event stream."""
        request_id: str = request.state.request_id
        _log_request(body.model, bool(body.stream), body.user)
        with metrics.refusals(API, "generate"):
            model = models.resolve(body.model, required=True)
            await body.inline_images(remote)
            inputs = [await checked_off_loop(body.generation_input, "input.grammar")]
        events = generate(relay, inputs, request_id, model)
        if not body.stream:
            collected = await _unless_disconnected(request, _collect(events))
            return JSONResponse(responses.whole(body, request_id, collected))
        first = await _unless_disconnected(request, anext(events))
        return _sse(response_stream.stream(body, request_id, _prepend(first, events)), request_id)

    @app.post("/v1/embeddings", responses=ERROR_RESPONSES)
    async def create_embeddings(
        body: embeddings.EmbeddingRequest, request: Request
    ) -> dict[str, object]:
        """One vector per input, in order (``encoding_format`` float or base64)."""
        request_id: str = request.state.request_id
        _log_request(body.model, False, body.user)
        with metrics.refusals(API, "embed"):
            model = models.resolve(body.model, required=True)
            embedding = body.embedding_input()
        work = embedder.embed(request_id, embedding, None, API, model)
        return embeddings.response(body, await _unless_disconnected(request, work))

    return app


def _log_request(model: str, streamed: bool, user: str | None) -> None:
    """The model named, whether the reply streams and the client's ``user`` (shortened to
    ``MAX_LOGGED_USER_CHARS``) go on every log line of this request (its tasks inherit them)."""
    bind_request(model=model, streamed=streamed)
    if user is not None:
        structlog.contextvars.bind_contextvars(user=_shortened(user, MAX_LOGGED_USER_CHARS))


def _shortened(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and a note that says how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... (truncated, {len(text)} characters)"


async def _collect(events: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in events]


async def _prepend(first: Event, rest: AsyncIterator[Event]) -> AsyncIterator[Event]:
    yield first
    async for event in rest:
        yield event


def _sse(events: AsyncIterator[str], request_id: str) -> StreamingResponse:
    return StreamingResponse(_ending_on_error(events, request_id), media_type="text/event-stream")


async def _ending_on_error(events: AsyncIterator[str], request_id: str) -> AsyncIterator[str]:
    """The stream's events; a failure after it began ends it with one error event."""
    try:
        async for event in events:
            yield event
    except PaddlerError as error:
        yield stream_error_event(error, request_id)
