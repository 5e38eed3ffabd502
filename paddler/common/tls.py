"""TLS for every port and every dial: certificate files, picked up again when rotated in place."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
import structlog

from paddler.common.errors import ConfigurationError
from paddler.common.secret_file import ChangingFile

log = structlog.get_logger(__name__)

ROTATION_CHECK_S = 1.0
MAX_PEM_BYTES = 1024 * 1024


def read_pem(path: Path, what: str) -> bytes:
    """A PEM file's bytes; a clear error when it is missing or not PEM."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as error:
        raise ConfigurationError(f"{what} {path} cannot be read: {error.strerror}") from None
    if len(data) > MAX_PEM_BYTES or b"-----BEGIN " not in data:
        raise ConfigurationError(f"{what} {path} is not a PEM file")
    return data


class RotationWatch:
    """Tells when any of some files changed (looked at most once a second each)."""

    def __init__(self, paths: list[Path]) -> None:
        self._files = [ChangingFile(path) for path in paths]

    def rotated(self) -> bool:
        """Whether a file changed since the last True."""
        return _any_changed(self._files)


def _any_changed(files: list[ChangingFile]) -> bool:
    """Whether any of ``files`` changed (each one is looked at, so each notes its new state)."""
    changed = [file.changed() for file in files]
    return any(changed)


@dataclass(frozen=True)
class ServerTls:
    """A server's certificate chain and key; with ``client_ca``, clients must present a
    certificate that CA signed (mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        pair = (read_pem(self.key, "TLS key"), read_pem(self.cert, "TLS certificate"))
        roots = read_pem(self.client_ca, "TLS client CA") if self.client_ca else None
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=roots)

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """gRPC credentials that serve the files' newest certificate on each new connection."""
        watched = [ChangingFile(path) for path in self._paths()]

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            if not _any_changed(watched):
                return None
            try:
                configuration = self._configuration()
            except ConfigurationError as error:
                log.warning("TLS files not reloaded; the previous ones stay", issue=error.message)
                return None
            log.info("TLS certificate reloaded", cert=str(self.cert))
            return configuration

        # gRPC's stubs say the fetcher returns a configuration; None (no change) is documented.
        fetcher = cast("Callable[[], grpc.ServerCertificateConfiguration]", fetch)
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(), fetcher, require_client_authentication=self.client_ca is not None
        )

    def ssl_context(self) -> ssl.SSLContext:
        """An SSL context for an HTTP server (see ``keep_fresh`` for rotation)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._load(context)
        if self.client_ca is not None:
            context.load_verify_locations(cafile=str(self.client_ca))
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def _load(self, context: ssl.SSLContext) -> None:
        read_pem(self.cert, "TLS certificate")
        read_pem(self.key, "TLS key")
        try:
            context.load_cert_chain(str(self.cert), str(self.key))
        except (ssl.SSLError, OSError) as error:
            raise ConfigurationError(
                f"TLS certificate {self.cert} and key {self.key} do not load: {error}"
            ) from None

    async def keep_fresh(self, context: ssl.SSLContext) -> None:
        """Load a rotated certificate into ``context`` (new connections get it) until
        cancelled."""
        watched = [ChangingFile(path) for path in self._paths()]
        while True:
            await asyncio.sleep(ROTATION_CHECK_S)
            if _any_changed(watched):
                try:
                    self._load(context)
                except ConfigurationError as error:
                    log.warning("TLS files not reloaded; the old ones stay", issue=error.message)
                else:
                    log.info("TLS certificate reloaded", cert=str(self.cert))

    def _paths(self) -> list[Path]:
        return [self.cert, self.key, *([self.client_ca] if self.client_ca else [])]


@dataclass(frozen=True)
class ClientTls:
    """How a client checks the server (``ca``; None: the system's roots) and, for mutual TLS,
    the certificate it presents; ``server_name`` is the name the server's certificate must
    carry when the address is an IP (a pod's)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str = ""

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials."""
        roots = read_pem(self.ca, "TLS CA") if self.ca else None
        key = read_pem(self.key, "TLS key") if self.key else None
        chain = read_pem(self.cert, "TLS certificate") if self.cert else None
        return grpc.ssl_channel_credentials(roots, key, chain)

    def files(self) -> list[Path]:
        """The files this TLS reads (to watch for rotation)."""
        return [path for path in (self.ca, self.cert, self.key) if path is not None]

    def channel_options(self) -> tuple[tuple[str, str], ...]:
        """The options that make gRPC expect ``server_name``."""
        return (("grpc.ssl_target_name_override", self.server_name),) if self.server_name else ()
