"""A grpc.aio server with what every Paddler server has: errors mapped, health, reflection."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterable, Mapping

import structlog
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from paddler.common.addresses import join_host_port, split_host_port
from paddler.common.error_interceptor import ErrorInterceptor, Refused
from paddler.common.errors import ConfigurationError
from paddler.common.guards import Guard
from paddler.common.tls import ServerTls

log = structlog.get_logger(__name__)

CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # A port another process holds is an error, not a port shared with it (gRPC's default
    # SO_REUSEPORT would split the calls between a second balancer or agent and the first).
    ("grpc.so_reuseport", 0),
    # A request with images (up to 4 MiB of them, besides 1 MiB of text) fits; gRPC's own
    # default of 4 MiB would refuse it.
    ("grpc.max_receive_message_length", 8 << 20),
)
SERVER_OPTIONS = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # A port another process holds is an error, not a port shared with it (gRPC's default
    # SO_REUSEPORT would split the calls between a second balancer or agent and the first).
    ("grpc.so_reuseport", 0),
    # A request with images (up to 4 MiB of them, besides 1 MiB of text) fits; gRPC's own
    # default of 4 MiB would refuse it.
    ("grpc.max_receive_message_length", 8 << 20),
)


LIVENESS_SERVICE = "liveness"
"""A health entry that is SERVING from the start until the drain (liveness probes): downloads,
model loads and swaps leave it SERVING. The drain refuses every new call, health included."""


class ManagedServer:
    """Owns the aio server and its health servicer; ``service_names`` are reported in health.

    The overall entry ("") and each service say whether calls are served now (readiness);
    ``LIVENESS_SERVICE`` says only that the process answers. ``guards`` say who may call each
    service (health and reflection stay open); ``on_refused`` counts refused credentials.
    """

    def __init__(
        self,
        service_names: Iterable[str],
        guards: Mapping[str, Guard] | None = None,
        on_refused: Refused | None = None,
    ) -> None:
        interceptor = ErrorInterceptor(guards, on_refused)
        self.server = aio.server(interceptors=[interceptor], options=SERVER_OPTIONS)
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = tuple(service_names)
        reflection.enable_server_reflection(
            (
                *self.service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )

    async def start(self, address: str, tls: ServerTls | None = None) -> str:
        """Bind ``address`` (port 0 picks a free port), with TLS when ``tls`` is given, start,
        and return the bound address."""
        try:
            if tls is None:
                port = self.server.add_insecure_port(address)
            else:
                port = self.server.add_secure_port(address, tls.grpc_credentials())
        except RuntimeError as error:  # gRPC says only that it could not bind
            await self.server.stop(None)  # on this loop, not in a finalizer after it closed
            raise ConfigurationError(
                f"cannot listen on {address}: {error} (is another process using the port?)"
            ) from error
        try:
            host = split_host_port(address)[0]
        except ValueError:  # no port given: gRPC bound its default one
            host = address
        await self.server.start()
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self.set_serving(serving=False)
        return join_host_port(host, port)

    async def set_alive(self, *, alive: bool) -> None:
        """Report the liveness entry SERVING or NOT_SERVING (a probe then restarts the
        process)."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if alive
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set(LIVENESS_SERVICE, status)

    async def set_serving(self, *, serving: bool) -> None:
        """Report SERVING or NOT_SERVING, overall and for each service."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def drain(self, grace_s: float) -> None:
        """Report NOT_SERVING, refuse new calls and give in-flight ones ``grace_s`` to finish."""
        await self.set_serving(serving=False)
        await self.server.stop(grace_s)


async def wait_for_termination_signal() -> None:
    """Return on SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    received = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, received.set)
    await received.wait()
    log.info("termination signal received")
