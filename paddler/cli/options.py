"""Flags that more than one server command takes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from paddler.common.dialer import Dialer
from paddler.common.model_sources import ModelSourcePolicy
from paddler.common.secret_file import SecretFile
from paddler.common.tls import ClientTls, ServerTls

GracePeriodOption = Annotated[
    float,
    typer.Option(
        min=0,
        envvar="PADDLER_GRACE_PERIOD",
        help="Seconds in-flight streams get to finish after SIGTERM.",
    ),
]
LogLevel = Literal["debug", "info", "warning", "error"]
LogLevelOption = Annotated[
    LogLevel,
    typer.Option(
        envvar="PADDLER_LOG_LEVEL", case_sensitive=False, help="Least severe level logged."
    ),
]
ManagementAddressOption = Annotated[
    str, typer.Option(envvar="PADDLER_MANAGEMENT_ADDRESS", help="Balancer management address.")
]
DEFAULT_MANAGEMENT_ADDRESS = "127.0.0.1:50053"

# Security: every server command and every client command takes what it needs of these.
AllowInsecureOption = Annotated[
    bool,
    typer.Option(
        envvar="PADDLER_ALLOW_INSECURE",
        help="Listen beyond loopback even where a surface's credentials are not configured "
        "(logged as a warning). Without it such a start is refused.",
    ),
]
TlsCertOption = Annotated[
    Path | None,
    typer.Option(
        envvar="PADDLER_TLS_CERT",
        help="PEM certificate chain: every port of this process serves TLS with it (and it is "
        "the client certificate this process presents for mutual TLS). Re-read when the file "
        "changes.",
    ),
]
TlsKeyOption = Annotated[
    Path | None,
    typer.Option(envvar="PADDLER_TLS_KEY", help="PEM private key of --tls-cert."),
]
TlsClientCaOption = Annotated[
    Path | None,
    typer.Option(
        envvar="PADDLER_TLS_CLIENT_CA",
        help="Mutual TLS: peers must present a certificate this CA signed (the balancer asks "
        "agents on its management port; an agent asks the balancer).",
    ),
]
TlsCaOption = Annotated[
    Path | None,
    typer.Option(
        envvar="PADDLER_TLS_CA",
        help="Dial with TLS, trusting this PEM CA (default: plain, unencrypted): the balancer "
        "dials agents, an agent its balancer, a command the server it calls.",
    ),
]
TlsServerNameOption = Annotated[
    str,
    typer.Option(
        envvar="PADDLER_TLS_SERVER_NAME",
        help="The name the peer's certificate must carry when it is dialled by IP (empty: the "
        "address's host).",
    ),
]
AgentTokenFileOption = Annotated[
    Path | None,
    typer.Option(
        envvar="PADDLER_AGENT_TOKEN_FILE",
        help="File holding the agent token, shared by the balancer and its agents: agents "
        "register with it and the balancer presents it to them (default: none).",
    ),
]
AdminKeyFileOption = Annotated[
    Path | None,
    typer.Option(
        envvar="PADDLER_ADMIN_KEY_FILE",
        help="File holding the admin key: ManagementService and the admin panel need it "
        "(default: none).",
    ),
]


def server_tls(cert: Path | None, key: Path | None, client_ca: Path | None) -> ServerTls | None:
    """The TLS a server command's flags ask for; a half-given pair is a usage error."""
    if (cert is None) != (key is None):
        raise typer.BadParameter("--tls-cert and --tls-key go together")
    if cert is None or key is None:
        if client_ca is not None:
            raise typer.BadParameter("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    return ServerTls(cert, key, client_ca)


def client_tls(
    ca: Path | None, server_name: str, identity: ServerTls | None = None
) -> ClientTls | None:
    """How a process dials with TLS (``identity``: the certificate it presents), or None for
    plain."""
    if ca is None:
        return None
    cert, key = (identity.cert, identity.key) if identity else (None, None)
    return ClientTls(ca=ca, cert=cert, key=key, server_name=server_name)


ApiKeyFileOption = Annotated[
    Path | None,
    typer.Option(
        envvar="PADDLER_API_KEY_FILE",
        help="File holding your API key, presented to the balancer (when it asks for keys).",
    ),
]


def dialer(
    tls_ca: Path | None,
    tls_server_name: str,
    credential_file: Path | None,
    identity: tuple[Path | None, Path | None] = (None, None),
) -> Dialer:
    """How a client command dials: TLS when ``tls_ca`` is given (presenting the ``identity``
    certificate and key where the server asks for one), with the credential in
    ``credential_file`` (an API key or the admin key) when one is given."""
    return Dialer(
        client_tls(tls_ca, tls_server_name, server_tls(*identity, None)),
        SecretFile(credential_file, "credential") if credential_file else None,
    )


AllowedModelRootOption = Annotated[
    list[str] | None,
    typer.Option(
        envvar="PADDLER_ALLOWED_MODEL_ROOT",
        help="A folder on the agents that desired states may take local_path models from "
        "(repeatable; default: any absolute path).",
    ),
]
AllowedHfOwnerOption = Annotated[
    list[str] | None,
    typer.Option(
        envvar="PADDLER_ALLOWED_HF_OWNER",
        help="A Hugging Face owner whose repositories desired states may take models from "
        "(repeatable; default: any).",
    ),
]


AllowedUrlHostOption = Annotated[
    list[str] | None,
    typer.Option(
        envvar="PADDLER_ALLOWED_URL_HOST",
        help="A host desired states may download models from by URL, redirects included "
        "(repeatable; default: any).",
    ),
]
AllowHttpModelsOption = Annotated[
    bool,
    typer.Option(
        envvar="PADDLER_ALLOW_HTTP_MODELS",
        help="Let desired states download models over plain http (default: https only).",
    ),
]


def model_sources(
    roots: list[str] | None,
    owners: list[str] | None,
    url_hosts: list[str] | None,
    *,
    allow_http: bool,
) -> ModelSourcePolicy:
    """The allow-list the flags give; a root must be absolute."""
    for root in roots or ():
        if not root.startswith("/"):
            raise typer.BadParameter(f"{root!r} is not an absolute path")
    hosts = tuple(host.lower() for host in url_hosts or ())
    return ModelSourcePolicy(tuple(roots or ()), tuple(owners or ()), hosts, allow_http)
