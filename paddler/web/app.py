"""The balancer's web server (``--web-addr``): Prometheus metrics at ``/metrics``."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from paddler.balancer.metrics import BalancerMetrics


def create_web_app(metrics: BalancerMetrics) -> FastAPI:
    """The app; it reads the balancer's own metrics registry."""
    app = FastAPI(title="Paddler balancer", version="1", docs_url=None, redoc_url=None)

    @app.get("/metrics")
    async def scrape() -> Response:
        """Every metric in Prometheus' text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
