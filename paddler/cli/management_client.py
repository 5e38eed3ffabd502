"""The CLI's client of the balancer's ManagementService."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from paddler.cli.failure import exit_on_rpc_error
from paddler.common.dialer import Dialer
from paddler.v1 import management_pb2_grpc

CALL_TIMEOUT_S = 10.0


@contextmanager
def management_stub(
    address: str, dialer: Dialer
) -> Iterator[management_pb2_grpc.ManagementServiceStub]:
    """A stub for the ``with`` block; a failed call ends the command with one line."""
    with dialer.channel(address) as channel, exit_on_rpc_error():
        yield management_pb2_grpc.ManagementServiceStub(channel)
