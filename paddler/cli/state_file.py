"""The desired state kept in a JSON file (a ConfigMap in Kubernetes): set once, or kept in force."""

from __future__ import annotations

from pathlib import Path

import grpc
import structlog
import typer
from google.protobuf import json_format

from paddler.cli.management_client import CALL_TIMEOUT_S
from paddler.cli.stop_signal import stop_requested
from paddler.common.dialer import Dialer
from paddler.common.logging import configure_logging
from paddler.v1 import desired_state_pb2, management_pb2, management_pb2_grpc

log = structlog.get_logger("paddler.state")


def read_state_file(path: Path) -> desired_state_pb2.DesiredState:
    """The DesiredState in ``path`` (protobuf's JSON form); a bad file is a BadParameter."""
    try:
        text = path.read_text()
    except OSError as error:
        raise typer.BadParameter(
            f"cannot read {path}: {error.strerror}", param_hint="--file"
        ) from None
    try:
        return json_format.Parse(text, desired_state_pb2.DesiredState())
    except json_format.ParseError as error:
        raise typer.BadParameter(
            f"{path} is not a desired state in JSON: {error}", param_hint="--file"
        ) from None


def watch_state_file(
    path: Path,
    address: str,
    dialer: Dialer,
    interval_s: float,
    log_level: str,
    pool: str,
    aliases: management_pb2.PoolAliases | None,
) -> None:
    """Keep ``pool``'s desired state equal to the file's (and its aliases to ``aliases``,
    unless None) until SIGTERM or SIGINT."""
    configure_logging(log_level)
    stop = stop_requested()
    last_problem = ""
    with dialer.channel(address) as channel:
        stub = management_pb2_grpc.ManagementServiceStub(channel)
        while not stop.is_set():
            problem = _reconcile(stub, path, pool, aliases)
            if problem and problem != last_problem:  # once per new problem, not every interval
                log.warning("desired state not set", file=str(path), problem=problem)
            last_problem = problem
            stop.wait(interval_s)
    log.info("state watch stopped", file=str(path))


def _reconcile(
    stub: management_pb2_grpc.ManagementServiceStub,
    path: Path,
    pool: str,
    aliases: management_pb2.PoolAliases | None,
) -> str:
    """Set the file's state if the balancer's differs; return what went wrong, or ""."""
    try:
        wanted = read_state_file(path)
    except typer.BadParameter as error:
        return error.message
    try:
        current = stub.GetDesiredState(
            management_pb2.GetDesiredStateRequest(pool=pool), timeout=CALL_TIMEOUT_S
        ).desired_state
        if current.version and current.state == wanted and _same_aliases(stub, pool, aliases):
            log.debug("desired state checked", file=str(path), version=current.version)
            return ""
        reply = stub.SetDesiredState(
            management_pb2.SetDesiredStateRequest(state=wanted, pool=pool, aliases=aliases),
            timeout=CALL_TIMEOUT_S,
        )
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        return f"{error.code().name}: {error.details()}"
    log.info(
        "desired state set",
        file=str(path),
        pool=reply.desired_state.pool,
        version=reply.desired_state.version,
        epoch=reply.desired_state.epoch,
    )
    return ""


def _same_aliases(
    stub: management_pb2_grpc.ManagementServiceStub,
    pool: str,
    aliases: management_pb2.PoolAliases | None,
) -> bool:
    """Whether ``pool`` has ``aliases`` already (None: whatever it has)."""
    if aliases is None:
        return True
    pools = stub.ListPools(management_pb2.ListPoolsRequest(), timeout=CALL_TIMEOUT_S).pools
    return any(each.name == pool and each.aliases == aliases.names for each in pools)
