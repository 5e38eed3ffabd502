"""A cap on the size of an HTTP request's body, enforced while the body is read."""

from __future__ import annotations

import collections
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
# Builds the 413 for a request (its scope) whose body is over the cap (the int), in the shape
# of the app's other errors.
Refusal = Callable[[Scope, int], Response]


class BodyLimitMiddleware:
    """Refuses with a 413 a request whose body is over ``max_bytes``: at once when its
    Content-Length says so, else as soon as the bytes read pass the cap (so no more than the
    cap and one message of the server's is ever held). A body within the cap goes on to the
    app as it came (a plain ASGI middleware: it leaves streamed responses and disconnects
    alone)."""

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
        body: collections.deque[Message] = collections.deque()
        size = 0
        while True:
            message = await receive()
            body.append(message)
            if message["type"] != "http.request":  # the client left: the app sees it so
                break
            size += len(message.get("body", b""))
            if size > self._max_bytes:
                body.clear()
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def receive_read_body() -> Message:
            return body.popleft() if body else await receive()

        await self._app(scope, receive_read_body, send)

    def _declared_too_large(self, scope: Scope) -> bool:
        declared = Headers(scope=scope).get("content-length", "").strip().lstrip("0")
        if not (declared.isascii() and declared.isdigit()):
            return False  # none, or zero (the server refuses one that is not a number)
        # More digits than the cap has is too large whatever they say (int() of them is slow).
        return len(declared) > len(str(self._max_bytes)) or int(declared) > self._max_bytes

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._refusal(scope, self._max_bytes)(scope, receive, send)
