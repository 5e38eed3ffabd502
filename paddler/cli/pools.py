"""``paddler pools``: each pool's names, agents, slots, buffer and rollout, as a table."""

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
from paddler.v1 import management_pb2


def pools(
    address: ManagementAddressOption = DEFAULT_MANAGEMENT_ADDRESS,
    admin_key_file: AdminKeyFileOption = None,
    tls_ca: TlsCaOption = None,
    tls_server_name: TlsServerNameOption = "",
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """Show each pool: its aliases, the models its agents serve, agents serving/registered,
    free/total slots, requests buffered, and its desired state's version and rollout."""
    with management_stub(
        address, dialer(tls_ca, tls_server_name, admin_key_file, (tls_cert, tls_key))
    ) as stub:
        reply = stub.ListPools(management_pb2.ListPoolsRequest(), timeout=CALL_TIMEOUT_S)
    table = Table(
        "pool",
        "aliases",
        "models",
        "agents serving/registered",
        "slots free/total",
        "buffered",
        "state",
        "rollout",
    )
    for pool in reply.pools:
        table.add_row(
            pool.name,
            ", ".join(pool.aliases) or "-",
            ", ".join(pool.models) or "-",
            f"{pool.serving}/{pool.agents}",
            f"{pool.slots_free}/{pool.slots_total}",
            str(pool.buffered),
            f"v{pool.desired_state.version}" if pool.desired_state.version else "none set",
            _rollout(pool),
        )
    Console(width=200).print(table)


def _rollout(pool: management_pb2.Pool) -> str:
    rollout = pool.rollout
    if rollout.failure:
        return f"stopped: {rollout.failure}"
    if not pool.desired_state.version:
        return "-"
    return f"{rollout.applied}/{rollout.agents} applied"
