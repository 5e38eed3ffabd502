"""A cap on the size of an HTTP request's body, enforced while the body is read."""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
# Builds the 413 for a request (its scope) whose body is over the cap (the int), in the shape
# of the app's other errors.
Refusal = Callable[[Scope, int], Response]


class BodyLimitMiddleware:
    """Refuses with a 413 a request whose body is over ``max_bytes``: at once when its
    Content-Length says so, else as soon as the bytes the app reads pass the cap. Nothing is
    read ahead: a route that reads no body (``/metrics``, ``/health``, a preflight) costs what
    the server buffers (uvicorn pauses at 64 KiB), and a route that reads one holds at most the
    cap. Past the cap the app sees the client leave, its own answer is dropped, and the 413 goes
    out instead (a plain ASGI middleware: streamed responses pass untouched)."""

    def __init__(self, app: ASGIApp, max_bytes: int, refusal: Refusal) -> None:
        self._app = app
        self._max_bytes = max_bytes
        self._refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if self._declared_too_large(scope):
            await self._refuse(scope, receive, send)
            return
        read = 0
        over = False
        started = False

        async def counting_receive() -> Message:
            nonlocal read, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self._max_bytes:
                    over = True
                    return {"type": "http.disconnect"}  # the app stops reading here
            return message

        async def answering_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # the app's answer to the "disconnect": the 413 goes instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, counting_receive, answering_send)
        except ClientDisconnect:
            if not over:
                raise
        if over and not started:
            await self._refuse(scope, receive, send)

    def _declared_too_large(self, scope: Scope) -> bool:
        declared = Headers(scope=scope).get("content-length", "").strip().lstrip("0")
        if not (declared.isascii() and declared.isdigit()):
            return False  # none, or zero (the server refuses one that is not a number)
        # More digits than the cap has is too large whatever they say (int() of them is slow).
        return len(declared) > len(str(self._max_bytes)) or int(declared) > self._max_bytes

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._refusal(scope, self._max_bytes)(scope, receive, send)
