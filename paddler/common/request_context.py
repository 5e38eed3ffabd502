"""What identifies a call on every log line it causes (structlog's context variables): the API
it came in by (``grpc``, ``openai``, ``web``), the endpoint, the method, whether the reply
streams, the client's address, and, once known, the request id and the model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

GRPC_METHOD = "POST"
"""The HTTP/2 method every gRPC call is sent with."""


@contextmanager
def call_context(
    *, api: str, endpoint: str, method: str, client: str, streamed: bool | None = None
) -> Iterator[None]:
    """Bind the call's identity to every line logged while it runs (its tasks inherit it)."""
    fields: dict[str, object] = {
        "api": api,
        "endpoint": endpoint,
        "method": method,
        "client": client,
    }
    if streamed is not None:
        fields["streamed"] = streamed
    with structlog.contextvars.bound_contextvars(**fields):
        yield


def bind_request(
    *, request_id: str | None = None, model: str | None = None, streamed: bool | None = None
) -> None:
    """Add what the handler learns (the request id, the model named, whether the reply
    streams) to the call's log lines from here on; None leaves a field as it is."""
    fields = {"request_id": request_id, "model": model, "streamed": streamed}
    structlog.contextvars.bind_contextvars(
        **{name: value for name, value in fields.items() if value is not None}
    )


def served_status(api: str) -> str | int:
    """The status a served call ended with, as its API writes it (gRPC's code, HTTP's number)."""
    return "OK" if api == "grpc" else 200


def cancelled_status(api: str) -> str | int:
    """The status of a call its client left: gRPC's CANCELLED, or 499 (client closed request)."""
    return "CANCELLED" if api == "grpc" else 499


def http_client(scope: Scope) -> str:
    """``host:port`` of the HTTP client ("" when the server does not say)."""
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else ""


class CallContextMiddleware:
    """Binds each HTTP request's identity (``api``, path, method, client) to its log lines (a
    plain ASGI middleware: it leaves streaming and disconnects alone)."""

    def __init__(self, app: ASGIApp, api: str) -> None:
        self._app = app
        self._api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        with call_context(
            api=self._api,
            endpoint=scope["path"],
            method=scope["method"],
            client=http_client(scope),
        ):
            await self._app(scope, receive, send)
