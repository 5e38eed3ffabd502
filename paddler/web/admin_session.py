"""The admin panel's sign-in, when the balancer has an admin key: the key, posted once, opens a
session kept in the balancer's memory; the browser holds only a random token in an HttpOnly,
SameSite=Strict cookie. Scripts may send the key itself as ``Authorization: Bearer`` to /api/*."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from paddler.common.error_interceptor import Refused
from paddler.common.errors import UnauthenticatedError
from paddler.common.guards import MISSING, Admission, Guard, bearer
from paddler.common.request_context import http_client
from paddler.web.pages import error_response, page

log = structlog.get_logger(__name__)

SURFACE = "panel"
COOKIE = "paddler_session"
SESSION_LIFETIME_S = 12 * 60 * 60
# Sessions held at once; opening one more ends the oldest.
MAX_SESSIONS = 64
OPEN_PATHS = frozenset(
    {"/metrics", "/api/login", "/api/logout", "/static/login.js", "/static/panel.css"}
)
"""What needs no session: the metrics, the sign-in page's parts, and logout (it ends only the
session its cookie names)."""
SIGN_IN_PAGE = "login.html"


@dataclass
class _Session:
    expires_at: float
    # The admin key it was opened with: once the key file changes, the session ends.
    key: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AdminSessions:
    """Sessions opened with ``guard``'s admin key, by the digest of their token; at most
    ``limit``, each for ``lifetime_s``."""

    def __init__(
        self, guard: Guard, lifetime_s: float = SESSION_LIFETIME_S, limit: int = MAX_SESSIONS
    ) -> None:
        self.guard = guard
        self.lifetime_s = lifetime_s
        self._limit = limit
        self._sessions: dict[str, _Session] = {}

    def open(self, presented: str) -> str:
        """A new session's token; UnauthenticatedError when ``presented`` is not the key."""
        with self.guard.admit(presented):
            now = time.monotonic()
            for digest, session in list(self._sessions.items()):
                if session.expires_at <= now:
                    del self._sessions[digest]
            token = secrets.token_urlsafe(32)
            self._sessions[_digest(token)] = _Session(now + self.lifetime_s, presented)
            while len(self._sessions) > self._limit:
                del self._sessions[next(iter(self._sessions))]
            return token

    def close(self, token: str | None) -> None:
        """End the session of ``token``, if there is one."""
        if token:
            self._sessions.pop(_digest(token), None)

    def admit(self, token: str | None) -> Admission:
        """The admission of the session ``token`` names; UnauthenticatedError when there is
        none, it expired or the admin key changed since it was opened."""
        digest = _digest(token) if token else ""
        session = self._sessions.get(digest)
        if session is not None and session.expires_at > time.monotonic():
            try:
                return self.guard.admit(session.key)
            except UnauthenticatedError:
                log.info("panel session ended: the admin key changed")
        self._sessions.pop(digest, None)
        raise UnauthenticatedError(
            "sign in with the admin key on the panel's page, or send it as "
            "'authorization: Bearer <admin key>'",
            reason=MISSING,
        )


class AdminSessionMiddleware:
    """Every request outside ``OPEN_PATHS`` needs a session, or on /api/* the admin key as
    ``Authorization: Bearer``: without, ``/`` is the sign-in page and the rest a 401."""

    def __init__(self, app: ASGIApp, *, sessions: AdminSessions, on_refused: Refused) -> None:
        self._app = app
        self._sessions = sessions
        self._on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Admit the request for its whole life, or answer it here."""
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        presented = None
        if scope["path"].startswith("/api/"):
            presented = bearer(headers.get("authorization"))
        try:
            if presented is not None:
                admission = self._sessions.guard.admit(presented)
            else:
                token = cookie_parser(headers.get("cookie", "")).get(COOKIE)
                admission = self._sessions.admit(token)
        except UnauthenticatedError as error:
            if scope["path"] == "/" and scope["method"] in {"GET", "HEAD"}:
                await page(SIGN_IN_PAGE)(scope, receive, send)
                return
            refused(scope, error, self._on_refused)
            await error_response(401, error.message)(scope, receive, send)
            return
        with admission:
            await self._app(scope, receive, send)


def refused(scope: Scope, error: UnauthenticatedError, on_refused: Refused) -> None:
    """Log (without what was presented) and count a refused credential."""
    log.warning(
        "credential refused",
        surface=SURFACE,
        path=scope["path"],
        peer=http_client(scope),
        reason=error.reason,
    )
    on_refused(SURFACE, error.reason)


class SignIn(BaseModel):
    """What the sign-in page posts."""

    key: str


def add_sign_in(app: FastAPI, sessions: AdminSessions, on_refused: Refused) -> None:
    """``POST /api/login`` (the admin key in, a session cookie out) and ``POST /api/logout``
    on ``app``."""

    @app.post("/api/login")
    async def login(body: SignIn, request: Request) -> Response:
        """Open a session: its cookie lasts as long as the session does."""
        try:
            token = sessions.open(body.key)
        except UnauthenticatedError as error:
            refused(request.scope, error, on_refused)
            return error_response(401, error.message, "key")
        log.info("panel session opened", peer=http_client(request.scope))
        reply = JSONResponse({"signed_in": True})
        reply.set_cookie(
            COOKIE,
            token,
            max_age=int(sessions.lifetime_s),
            path="/",
            secure=request.scope["scheme"] == "https",
            httponly=True,
            samesite="strict",
        )
        return reply

    @app.post("/api/logout")
    async def logout(request: Request) -> Response:
        """End the session of the request's cookie, and clear the cookie."""
        sessions.close(request.cookies.get(COOKIE))
        reply = JSONResponse({"signed_in": False})
        reply.delete_cookie(
            COOKIE,
            path="/",
            secure=request.scope["scheme"] == "https",
            httponly=True,
            samesite="strict",
        )
        return reply
