"""How one process dials another: plain or TLS, presenting its credential on every call."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import grpc
from grpc import aio

from paddler.common.grpc_server import CHANNEL_OPTIONS
from paddler.common.guards import bearer_metadata
from paddler.common.secret_file import SecretFile
from paddler.common.tls import ClientTls, RotationWatch

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Dialer:
    """Channels to one kind of peer (agents, a balancer) and the metadata each call carries."""

    tls: ClientTls | None = None
    credential: SecretFile | None = None
    options: tuple[tuple[str, int | str], ...] = field(default=CHANNEL_OPTIONS)

    def aio_channel(self, address: str) -> aio.Channel:
        """An asyncio channel to ``address``."""
        options = self._options()
        if self.tls is None:
            return aio.insecure_channel(address, options=options)
        return aio.secure_channel(address, self.tls.channel_credentials(), options=options)

    def channel(self, address: str) -> grpc.Channel:
        """A blocking channel to ``address`` (the CLI's); every call on it presents the
        credential."""
        options = self._options()
        if self.tls is None:
            channel = grpc.insecure_channel(address, options=options)
        else:
            channel = grpc.secure_channel(address, self.tls.channel_credentials(), options=options)
        if self.credential is None:
            return channel
        return grpc.intercept_channel(channel, _Presenting(self))

    @cached_property
    def _watch(self) -> RotationWatch:
        return RotationWatch(self.tls.files() if self.tls else [])

    def tls_rotated(self) -> bool:
        """Whether the TLS files changed since the last True: channels made before hold the
        old ones (gRPC reads them once) and should be made anew."""
        return self._watch.rotated()

    def metadata(self) -> Metadata | None:
        """What each call presents: the credential now (a rotated file is read again)."""
        return bearer_metadata(self.credential.value) if self.credential is not None else None

    def _options(self) -> tuple[tuple[str, int | str], ...]:
        return self.options + (self.tls.channel_options() if self.tls else ())


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, details: grpc.ClientCallDetails, metadata: Metadata | None) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = (*(details.metadata or ()), *(metadata or ()))
        self.credentials = details.credentials
        self.wait_for_ready = details.wait_for_ready
        self.compression = details.compression


class _Presenting(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the dialer's credential to each call of a blocking channel."""

    def __init__(self, dialer: Dialer) -> None:
        self._dialer = dialer

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(details, self._dialer.metadata())

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        """Present the credential."""
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        """Present the credential."""
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        """Present the credential."""
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        """Present the credential."""
        return continuation(self._details(details), requests)
