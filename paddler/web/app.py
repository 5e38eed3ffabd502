"""The HTTP app that serves Prometheus metrics at ``/metrics``: the balancer's web server
(``--web-addr``, which adds the admin panel) and the agent's (``--metrics-addr``)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.types import Scope

from paddler.common.body_limit import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware
from paddler.common.request_context import CallContextMiddleware
from paddler.web.pages import error_response

API = "web"
"""The surface's name on log lines and metrics."""


def create_web_app(
    registry: CollectorRegistry, title: str, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> FastAPI:
    """The app; it reads ``registry`` at each scrape, and refuses a body over
    ``max_body_bytes`` (the admin panel's desired state, say) with a 413."""
    app = FastAPI(title=title, version="1", docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes, refusal=_too_large)
    app.add_middleware(CallContextMiddleware, api=API)

    @app.get("/metrics")
    async def scrape() -> Response:
        """Every metric in Prometheus' text format."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _too_large(scope: Scope, max_bytes: int) -> Response:
    """The admin panel's refusal shape (``{"error": {"field", "message"}}``), as a 413."""
    del scope
    message = (
        f"the request body is larger than {max_bytes} bytes, the web server's cap "
        "(--max-request-body, PADDLER_MAX_REQUEST_BODY)"
    )
    return error_response(413, message)
