"""``host:port`` strings: IPv6 brackets, loopback and wildcard hosts, gRPC peer strings."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import unquote

IPV4_LOOPBACK = "127.0.0.1"
IPV6_LOOPBACK = "::1"
_PEER_SCHEMES = ("ipv4", "ipv6")


def _unbracket(host: str) -> str:
    """``host`` without the brackets of ``[v6]``."""
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``host`` spells (brackets allowed), or None for a name."""
    try:
        ip = ipaddress.ip_address(_unbracket(host))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_ipv6(host: str) -> bool:
    """Whether ``host`` is an IPv6 address, with or without brackets."""
    try:
        return isinstance(ipaddress.ip_address(_unbracket(host)), ipaddress.IPv6Address)
    except ValueError:
        return False


def join_host_port(host: str, port: int | str) -> str:
    """``host:port``, bracketing an IPv6 host: ``("::1", 5)`` -> ``"[::1]:5"``."""
    bare = _unbracket(host)
    return f"[{bare}]:{port}" if is_ipv6(bare) else f"{host}:{port}"


def split_host_port(address: str) -> tuple[str, int]:
    """``"[::1]:5"`` -> ``("::1", 5)``, ``"1.2.3.4:5"`` -> ``("1.2.3.4", 5)``.

    Raises ValueError when there is no port, or an IPv6 host lacks its brackets.
    """
    host, separator, port = address.rpartition(":")
    if not separator or not port.isdigit():
        raise ValueError(f"no port in address {address!r}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"unclosed bracket in address {address!r}")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 host needs brackets in address {address!r}")
    return host, int(port)


def is_local_host(host: str) -> bool:
    """Whether ``host`` is loopback or wildcard: ``""``, ``localhost``, ``127.x``, ``::1``,
    ``0.0.0.0``, ``::`` (with or without brackets)."""
    bare = _unbracket(host).lower()
    if bare in ("", "localhost"):
        return True
    ip = _ip(bare)
    return ip is not None and (ip.is_loopback or ip.is_unspecified)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` reaches only this machine: a loopback IP (``127.x``, ``::1``), or
    ``localhost`` when every address it resolves to here is one (not a wildcard, which listens
    on every interface)."""
    bare = _unbracket(host).lower()
    if bare == "localhost":
        try:
            resolved = {str(info[4][0]) for info in socket.getaddrinfo(bare, None)}
        except OSError:
            return False
        return bool(resolved) and all(is_loopback_host(address) for address in resolved)
    ip = _ip(bare)
    return ip is not None and ip.is_loopback


def loopback_for(host: str) -> str:
    """A loopback host for a local or wildcard ``host``: ``::1`` for IPv6 hosts, else
    ``127.0.0.1``; a loopback IP itself stays as it is."""
    ip = _ip(host)
    if ip is not None and ip.is_loopback:
        return str(ip)
    return IPV6_LOOPBACK if is_ipv6(host) else IPV4_LOOPBACK


def parse_peer(peer: str) -> tuple[str, int] | None:
    """Host and port of gRPC's ``context.peer()``: ``"ipv4:1.2.3.4:5"`` -> ``("1.2.3.4", 5)``,
    ``"ipv6:%5B::1%5D:5"`` -> ``("::1", 5)``; None for other kinds (``unix:...``)."""
    scheme, separator, rest = peer.partition(":")
    if not separator or scheme not in _PEER_SCHEMES:
        return None
    try:
        return split_host_port(unquote(rest))
    except ValueError:
        return None
