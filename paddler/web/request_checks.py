"""Checks on each request to the web server before the panel sees it: its ``Host`` must name
this server (a DNS-rebound page names its own), and a request that changes something must come
from the panel's own origin with a JSON body (a cross-site page can send neither)."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from urllib.parse import urlsplit

import structlog
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from paddler.common.addresses import split_host_port
from paddler.common.errors import ConfigurationError
from paddler.common.request_context import http_client
from paddler.web.pages import error_response

log = structlog.get_logger(__name__)

OPEN_PATHS = frozenset({"/metrics"})
"""Checked by nothing here: scrapers reach the metrics under any name."""
LOOPBACK_NAMES = frozenset({"localhost"})
STATE_CHANGING = frozenset({"POST", "PUT", "DELETE", "PATCH"})
DEFAULT_PORTS = {"http": 80, "https": 443}
ALLOWED_HOST_FLAG = "--web-allowed-host (PADDLER_WEB_ALLOWED_HOST)"
# Enough of a refused Host for the operator to recognise it on the log line.
LOGGED_HOST_CHARS = 100


def allowed_host_names(address: str, extra: Collection[str]) -> frozenset[str]:
    """The names a request's ``Host`` may carry besides an IP address: localhost, the host of
    ``address`` (the one the web server listens on) and ``extra``, each with any port."""
    names = set(LOOPBACK_NAMES)
    bound = split_host_port(address)[0].lower()
    if bound and _ip(bound) is None:
        names.add(bound.rstrip("."))
    for name in extra:
        names.add(_allowed_name(name))
    return frozenset(names)


def _allowed_name(entry: str) -> str:
    name = entry.strip().lower().rstrip(".")
    if not name or any(mark in name for mark in ":/@[] "):
        raise ConfigurationError(
            f"{ALLOWED_HOST_FLAG} takes a host name alone, without scheme, port or path: {entry!r}"
        )
    return name


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _host_and_port(value: str, scheme: str) -> tuple[str, int] | None:
    """``Host``'s name (lower case, no brackets, no final dot) and port (the scheme's default
    when absent); None when it is not a host and port."""
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or _ip(host) is None:
            return None
    else:
        host, colon, port = value.partition(":")
        rest = colon + port
    if not rest:
        return host.lower().rstrip("."), DEFAULT_PORTS.get(scheme, 0)
    digits = rest[1:]
    # At most a port's five digits: a longer number is no port (and slow to read).
    if not (rest[0] == ":" and digits.isascii() and digits.isdigit() and len(digits) <= 5):
        return None
    return host.lower().rstrip("."), int(digits)


def _same_origin(origin: str, host: tuple[str, int], scheme: str) -> bool:
    """Whether ``origin`` (an Origin header) is ``scheme://host:port``."""
    parts = urlsplit(origin)
    try:
        port = parts.port
    except ValueError:
        return False
    if parts.scheme != scheme or parts.hostname is None:
        return False
    named = (parts.hostname.rstrip("."), port or DEFAULT_PORTS.get(scheme, 0))
    return named == host


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


class RequestChecksMiddleware:
    """Refuses, in the panel's error shape, every request outside ``OPEN_PATHS``:

    - with 403 when its ``Host`` is neither an IP address nor one of ``allowed_names``
      (DNS rebinding: the page's own name reaches this server);
    - for POST, PUT, DELETE and PATCH, with 403 when it has an ``Origin`` other than
      ``scheme://Host`` (a page of another site or port), and with 415 when its body is not
      declared ``application/json`` (what a form or a simple cross-site request sends).
    """

    def __init__(self, app: ASGIApp, *, allowed_names: frozenset[str]) -> None:
        self._app = app
        self._allowed_names = allowed_names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse the request, or pass it on untouched."""
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self._app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is None:
            await self._app(scope, receive, send)
            return
        status, check, message = refusal
        log.warning(
            "request refused",
            check=check,
            method=scope["method"],
            path=scope["path"],
            host=Headers(scope=scope).get("host", "")[:LOGGED_HOST_CHARS],
            peer=http_client(scope),
        )
        await error_response(status, message)(scope, receive, send)

    def _refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        """The status, the check and the message of a refusal; None to pass."""
        headers = Headers(scope=scope)
        scheme = scope["scheme"]
        host = _host_and_port(headers.get("host", ""), scheme)
        if host is None or (_ip(host[0]) is None and host[0] not in self._allowed_names):
            return (
                403,
                "host",
                "this server does not answer to the name in the request's Host: add it with "
                f"{ALLOWED_HOST_FLAG} if it is this server's",
            )
        if scope["method"] not in STATE_CHANGING:
            return None
        origin = headers.get("origin")
        if origin is not None and not _same_origin(origin, host, scheme):
            return (403, "origin", "a page of another origin (site or port) may not change this")
        if _media_type(headers.get("content-type", "")) != "application/json":
            return (415, "content_type", "the body must be JSON, sent as application/json")
        return None
