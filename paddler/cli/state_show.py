"""``paddler state show`` and ``paddler state delete``: pools' desired states."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from google.protobuf import json_format

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
from paddler.common.pool_names import DEFAULT_POOL
from paddler.v1 import desired_state_pb2, management_pb2

PoolOption = Annotated[
    str,
    typer.Option(
        envvar="PADDLER_STATE_POOL",
        help="The pool (agents started with --pool NAME); default: the pool 'default'.",
    ),
]


def _as_dict(
    state: desired_state_pb2.VersionedDesiredState,
    rollout: management_pb2.StateRollout | None = None,
    aliases: list[str] | None = None,
) -> dict[str, object]:
    shown = json_format.MessageToDict(state, always_print_fields_with_no_presence=True)
    if aliases is not None:
        shown["aliases"] = aliases
    if rollout is not None:
        shown["rollout"] = json_format.MessageToDict(
            rollout, always_print_fields_with_no_presence=True
        )
    return shown


def print_state(state: desired_state_pb2.VersionedDesiredState) -> None:
    """Print a stored state as JSON."""
    typer.echo(json.dumps(_as_dict(state), indent=2))


def show(
    pool: Annotated[
        str | None,
        typer.Option(
            envvar="PADDLER_STATE_POOL",
            help="Print this pool only; default: every pool.",
        ),
    ] = None,
    address: ManagementAddressOption = DEFAULT_MANAGEMENT_ADDRESS,
    admin_key_file: AdminKeyFileOption = None,
    tls_ca: TlsCaOption = None,
    tls_server_name: TlsServerNameOption = "",
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """Print a pool's desired state and version as JSON (version 0: none set), its aliases and
    how far its rollout got (``rollout.failure`` says why it stopped, if it did). Without
    --pool: the pool 'default' at the top level, and every pool under ``pools`` by name."""
    with management_stub(
        address, dialer(tls_ca, tls_server_name, admin_key_file, (tls_cert, tls_key))
    ) as stub:
        pools = stub.ListPools(management_pb2.ListPoolsRequest(), timeout=CALL_TIMEOUT_S).pools
    by_name = {
        each.name: _as_dict(each.desired_state, each.rollout, list(each.aliases)) for each in pools
    }
    if pool is None:
        shown = {**by_name[DEFAULT_POOL], "pools": by_name}
    elif (pool or DEFAULT_POOL) in by_name:
        shown = by_name[pool or DEFAULT_POOL]
    else:
        typer.echo(f"error: no pool {pool!r}; pools: {', '.join(by_name)}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(shown, indent=2))


def delete(
    pool: Annotated[str, typer.Option(envvar="PADDLER_STATE_POOL", help="The pool to forget.")],
    address: ManagementAddressOption = DEFAULT_MANAGEMENT_ADDRESS,
    admin_key_file: AdminKeyFileOption = None,
    tls_ca: TlsCaOption = None,
    tls_server_name: TlsServerNameOption = "",
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """Forget a pool's desired state and aliases (once no agent is in it; not 'default')."""
    with management_stub(
        address, dialer(tls_ca, tls_server_name, admin_key_file, (tls_cert, tls_key))
    ) as stub:
        stub.DeletePool(management_pb2.DeletePoolRequest(pool=pool), timeout=CALL_TIMEOUT_S)
    typer.echo(f"pool {pool!r} deleted", err=True)
