"""An ASGI middleware that admits an HTTP request only with the right ``Authorization: Bearer``
credential, checked once before the app sees the request."""

from __future__ import annotations

from collections.abc import Callable, Collection

import structlog
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from paddler.common.error_interceptor import Refused
from paddler.common.errors import PaddlerError, UnauthenticatedError
from paddler.common.guards import Guard, bearer
from paddler.common.request_context import http_client

log = structlog.get_logger(__name__)


class BearerGuardMiddleware:
    """Requests to paths outside ``open_paths`` need ``guard``'s credential; a refusal is
    answered by ``refused`` (each API in its own error shape) and counted by ``on_refused``.
    CORS preflights (OPTIONS) pass: browsers send them without credentials."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        guard: Guard,
        surface: str,
        refused: Callable[[Scope, PaddlerError], Response],
        open_paths: Collection[str] = (),
        on_refused: Refused | None = None,
    ) -> None:
        self._app = app
        self._guard = guard
        self._surface = surface
        self._refused = refused
        self._open_paths = frozenset(open_paths)
        self._on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Admit, run the app for the request's whole life, then release the admission."""
        if (
            scope["type"] != "http"
            or scope["method"] == "OPTIONS"
            or scope["path"] in self._open_paths
        ):
            await self._app(scope, receive, send)
            return
        presented = bearer(Headers(scope=scope).get("authorization"))
        try:
            admission = self._guard.admit(presented)
        except PaddlerError as error:
            if isinstance(error, UnauthenticatedError):
                log.warning(
                    "credential refused",
                    surface=self._surface,
                    path=scope["path"],
                    peer=http_client(scope),
                    reason=error.reason,
                )
                if self._on_refused is not None:
                    self._on_refused(self._surface, error.reason)
            await self._refused(scope, error)(scope, receive, send)
            return
        with admission:
            await self._app(scope, receive, send)
