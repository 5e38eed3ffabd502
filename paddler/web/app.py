"""The HTTP app that serves Prometheus metrics at ``/metrics``: the balancer's web server
(``--web-addr``, which adds the admin panel) and the agent's (``--metrics-addr``)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def create_web_app(registry: CollectorRegistry, title: str) -> FastAPI:
    """The app; it reads ``registry`` at each scrape."""
    app = FastAPI(title=title, version="1", docs_url=None, redoc_url=None)

    @app.get("/metrics")
    async def scrape() -> Response:
        """Every metric in Prometheus' text format."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
