"""``paddler agents``: the agents registered with a balancer, as a table."""

from __future__ import annotations

from typing import Annotated

import grpc
import typer
from rich.console import Console
from rich.table import Table

from paddler.v1 import management_pb2, management_pb2_grpc, status_pb2


def agents(
    address: Annotated[
        str,
        typer.Option(envvar="PADDLER_MANAGEMENT_ADDRESS", help="Balancer management address."),
    ] = "127.0.0.1:50053",
) -> None:
    """Show each agent's slots (busy/total), model, applied state, issues and status age."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = management_pb2_grpc.ManagementServiceStub(channel).ListAgents(
                management_pb2.ListAgentsRequest(), timeout=10
            )
        except grpc.RpcError as error:
            assert isinstance(error, grpc.Call)
            typer.echo(f"paddler: {error.code().name}: {error.details()}", err=True)
            raise typer.Exit(1) from None
    table = Table(
        "name", "address", "slots busy/total", "claimed", "model", "ready", "state", "issues", "age"
    )
    for agent in reply.agents:
        age_s = agent.last_status_age.ToNanoseconds() / 1e9
        table.add_row(
            agent.name,
            agent.address,
            f"{agent.slots_processing}/{agent.slots_total}",
            str(agent.slots_claimed),
            agent.model or "-",
            "yes" if agent.ready else "no",
            _state(agent),
            "; ".join(agent.issues) or "-",
            f"{age_s:.1f} s",
        )
    Console(width=160).print(table)


def _state(agent: management_pb2.RegisteredAgent) -> str:
    phase = status_pb2.StatePhase.Name(agent.phase).removeprefix("STATE_PHASE_").lower()
    text = f"{phase} v{agent.applied_state_version}"
    if agent.download.bytes_done:
        total = agent.download.bytes_total or 0
        text += f" ({agent.download.bytes_done >> 20}/{total >> 20} MiB)"
    return text
