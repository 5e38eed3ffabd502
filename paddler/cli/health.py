"""``paddler health``: ask a server's gRPC health service, for container health checks."""

from __future__ import annotations

from typing import Annotated

import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paddler.cli.failure import exit_on_rpc_error
from paddler.cli.options import (
    TlsCaOption,
    TlsCertOption,
    TlsKeyOption,
    TlsServerNameOption,
    dialer,
)


def health(
    address: Annotated[str, typer.Argument(help="host:port of an agent or balancer gRPC server.")],
    service: Annotated[
        str,
        typer.Option(
            envvar="PADDLER_HEALTH_SERVICE",
            help="Health entry to ask: empty for readiness (serving now), 'liveness' for a "
            "process that answers (loading a model or not), or a service name.",
        ),
    ] = "",
    timeout: Annotated[
        float,
        typer.Option(min=0.1, envvar="PADDLER_HEALTH_TIMEOUT", help="Seconds to wait for a reply."),
    ] = 5.0,
    tls_ca: TlsCaOption = None,
    tls_server_name: TlsServerNameOption = "",
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """Exit 0 when ADDRESS reports SERVING; otherwise print why and exit 1 (health needs no
    credential)."""
    connection = dialer(tls_ca, tls_server_name, None, (tls_cert, tls_key))
    with connection.channel(address) as channel, exit_on_rpc_error():
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    typer.echo(status)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        raise typer.Exit(1)
