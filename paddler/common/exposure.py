"""Secure by default: a server that takes credentials listens beyond loopback only with them."""

from __future__ import annotations

import structlog

from paddler.common.addresses import is_loopback_host, split_host_port
from paddler.common.errors import ConfigurationError

log = structlog.get_logger(__name__)


def check_exposure(address: str, surface: str, missing: str, *, allow_insecure: bool) -> None:
    """Refuse to listen on ``address`` beyond loopback while ``missing`` names credentials the
    ``surface`` would need ("" when it has them); ``--allow-insecure`` turns the refusal into a
    logged warning."""
    if not missing or not address:
        return
    try:
        host = split_host_port(address)[0]
    except ValueError:
        host = address
    if is_loopback_host(host):
        return
    if not allow_insecure:
        raise ConfigurationError(
            f"the {surface} would listen on {address} with no {missing}: anyone who reaches it "
            f"would be let in. Give {missing}, listen on 127.0.0.1, or pass --allow-insecure "
            "(PADDLER_ALLOW_INSECURE=1) to accept that"
        )
    log.warning("listening without credentials", surface=surface, address=address, missing=missing)
