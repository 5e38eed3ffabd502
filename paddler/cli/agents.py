"""``paddler agents``: the agents registered with a balancer, as a table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from paddler.cli.management_client import CALL_TIMEOUT_S, management_stub
from paddler.cli.options import (
    DEFAULT_MANAGEMENT_ADDRESS,
    AdminKeyFileOption,
    ManagementAddressOption,
    TlsCaOption,
    TlsCertOption,
    TlsKeyOption,
    TlsServerNameOption,
    dialer,
)
from paddler.common.context_sources import context_source_label
from paddler.v1 import management_pb2, status_pb2


def agents(
    address: ManagementAddressOption = DEFAULT_MANAGEMENT_ADDRESS,
    admin_key_file: AdminKeyFileOption = None,
    tls_ca: TlsCaOption = None,
    tls_server_name: TlsServerNameOption = "",
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """Show each agent's slots (busy/total), model, context per slot (and what decided it),
    placement (devices and the layers on each, KV cache types, flash attention), chat
    template, applied state, issues and status age."""
    with management_stub(
        address, dialer(tls_ca, tls_server_name, admin_key_file, (tls_cert, tls_key))
    ) as stub:
        reply = stub.ListAgents(management_pb2.ListAgentsRequest(), timeout=CALL_TIMEOUT_S)
    table = Table(
        "name",
        "address",
        "slots busy/total",
        "claimed",
        "model",
        "context",
        "placement",
        "template",
        "ready",
        "state",
        "issues",
        "age",
    )
    for agent in reply.agents:
        age_s = agent.last_status_age.ToNanoseconds() / 1e9
        table.add_row(
            agent.name,
            agent.address,
            f"{agent.slots_processing}/{agent.slots_total}",
            str(agent.slots_claimed),
            agent.model or "-",
            _context(agent),
            _placement(agent.placement),
            agent.chat_template or "-",
            "yes" if agent.ready else "no",
            _state(agent),
            "; ".join(agent.issues) or "-",
            f"{age_s:.1f} s",
        )
    Console(width=200).print(table)


def _context(agent: management_pb2.RegisteredAgent) -> str:
    """Tokens per slot and what decided them, e.g. "8192 (trained)" or "3072 (memory, trained
    8192)"."""
    if not agent.context_size:
        return "-"
    source = context_source_label(agent.context_source)
    trained = agent.trained_context_size
    if trained and trained != agent.context_size:
        return f"{agent.context_size} ({source}, trained {trained})"
    return f"{agent.context_size} ({source})"


def _placement(placement: status_pb2.ModelPlacement) -> str:
    """Devices with the model's layers on them, then the KV cache and flash attention, e.g.
    "CUDA0 (NVIDIA H100) 31 layers, CPU 0; KV q8_0/q8_0, flash enabled"."""
    if not placement.devices:
        return "-"
    devices = ", ".join(
        f"{device.name}{f' ({device.description})' if device.layers else ''} {device.layers}"
        + (" layers" if device.layers else "")
        for device in placement.devices
    )
    return (
        f"{devices}; KV {placement.cache_type_k}/{placement.cache_type_v}, "
        f"flash {placement.flash_attention}"
    )


def _state(agent: management_pb2.RegisteredAgent) -> str:
    phase = status_pb2.StatePhase.Name(agent.phase).removeprefix("STATE_PHASE_").lower()
    text = f"{phase} v{agent.applied_state_version}"
    if agent.download.bytes_done:
        total = agent.download.bytes_total or 0
        text += f" ({agent.download.bytes_done >> 20}/{total >> 20} MiB)"
    if agent.rolling:
        text += " (updating)"
    return text
