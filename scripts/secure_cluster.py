"""Everything a benchmark needs to run a balancer and its agent with every security piece on:
a CA and certificates (mutual TLS on every hop), the agent token, the admin key and a client's
API key, as files in one folder, and the flags and client channels that use them."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import grpc
import trustme

HOSTS = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class SecureFiles:
    """The files of one secured cluster and the client key they admit."""

    ca: Path
    balancer_pair: tuple[Path, Path]
    agent_pair: tuple[Path, Path]
    agent_token: Path
    admin_key: Path
    api_keys: Path
    client_key: str

    def balancer_flags(self) -> list[str]:
        """TLS on every port (mutual on the management port), agents dialled over TLS, and
        every credential checked."""
        cert, key = self.balancer_pair
        return [
            "--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(self.ca),
            "--tls-ca", str(self.ca), "--agent-token-file", str(self.agent_token),
            "--admin-key-file", str(self.admin_key), "--api-keys-file", str(self.api_keys),
        ]  # fmt: skip

    def agent_flags(self) -> list[str]:
        """TLS on the agent's port (the balancer must present its certificate), the balancer
        dialled over TLS, and the agent token both ways."""
        cert, key = self.agent_pair
        return [
            "--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(self.ca),
            "--tls-ca", str(self.ca), "--agent-token-file", str(self.agent_token),
        ]  # fmt: skip

    def channel(self, address: str) -> grpc.aio.Channel:
        """A TLS channel that also presents the balancer's certificate (for the ports that ask
        for one)."""
        cert, key = self.balancer_pair
        credentials = grpc.ssl_channel_credentials(
            self.ca.read_bytes(), key.read_bytes(), cert.read_bytes()
        )
        return grpc.aio.secure_channel(address, credentials)

    def client_metadata(self) -> tuple[tuple[str, str], ...]:
        """A client's API key."""
        return (("authorization", f"Bearer {self.client_key}"),)

    def admin_metadata(self) -> tuple[tuple[str, str], ...]:
        """The admin key."""
        return (("authorization", f"Bearer {self.admin_key.read_text()}"),)


def make_secure_files(folder: Path) -> SecureFiles:
    """A new CA, certificates for the loopback hosts and random credentials in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA()
    ca = folder / "ca.pem"
    authority.cert_pem.write_to_path(str(ca))
    pairs = []
    for name in ("balancer", "agent"):
        issued = authority.issue_cert(*HOSTS)
        cert, key = folder / f"{name}.pem", folder / f"{name}.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        key.write_bytes(issued.private_key_pem.bytes())
        pairs.append((cert, key))
    client_key = secrets.token_hex(24)
    files = {name: folder / name for name in ("agent-token", "admin-key", "api-keys")}
    files["agent-token"].write_text(secrets.token_hex(24))
    files["admin-key"].write_text(secrets.token_hex(24))
    files["api-keys"].write_text(f"bench:{client_key}\n")
    return SecureFiles(
        ca=ca,
        balancer_pair=pairs[0],
        agent_pair=pairs[1],
        agent_token=files["agent-token"],
        admin_key=files["admin-key"],
        api_keys=files["api-keys"],
        client_key=client_key,
    )
