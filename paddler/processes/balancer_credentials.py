"""The credentials a balancer checks and where each is needed before it may listen widely."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from paddler.balancer.config import BalancerConfig
from paddler.common.api_keys import ApiKeys
from paddler.common.exposure import check_exposure
from paddler.common.guards import ApiKeyGuard, Guard, SecretGuard
from paddler.common.secret_file import SecretFile


@dataclass(frozen=True)
class BalancerCredentials:
    """The credentials a balancer checks, each read from its file (and again when it
    changes); None leaves that surface open."""

    agent_token: SecretFile | None
    admin_key: SecretFile | None
    api_keys: ApiKeys | None

    @classmethod
    def load(cls, config: BalancerConfig) -> BalancerCredentials:
        """Read every configured file now: a missing or bad one stops the start."""
        return cls(
            agent_token=_secret(config.agent_token_file, "agent token"),
            admin_key=_secret(config.admin_key_file, "admin key"),
            api_keys=ApiKeys(config.api_keys_file) if config.api_keys_file else None,
        )

    def client_guard(self) -> Guard | None:
        """Who may call inference (gRPC and OpenAI): a client with an API key."""
        return ApiKeyGuard(self.api_keys) if self.api_keys else None

    def admin_guard(self) -> Guard | None:
        """Who may call ManagementService and the admin panel: the admin key's holder."""
        return SecretGuard(self.admin_key, "the admin key", "admin") if self.admin_key else None

    def agent_guard(self) -> Guard | None:
        """Who may register as an agent: the agent token's holder."""
        token = self.agent_token
        return SecretGuard(token, "the agent token", "agent") if token else None

    def missing(self, *names: str) -> str:
        """The flags of the named credentials not configured, for ``check_exposure``."""
        flags: dict[str, tuple[object, str]] = {
            "api_keys": (self.api_keys, "API keys (--api-keys-file)"),
            "admin_key": (self.admin_key, "admin key (--admin-key-file)"),
            "agent_token": (self.agent_token, "agent token (--agent-token-file)"),
        }
        absent = [flag for name, (held, flag) in flags.items() if name in names and held is None]
        return " and ".join(absent)


def _secret(path: Path | None, what: str) -> SecretFile | None:
    return SecretFile(path, what) if path else None


def check_balancer_exposure(config: BalancerConfig, credentials: BalancerCredentials) -> None:
    """Every surface that would listen beyond loopback has its credentials (or the operator
    said --allow-insecure)."""
    surfaces = (
        (config.inference_address, "inference server", credentials.missing("api_keys")),
        (
            config.management_address,
            "management server",
            credentials.missing("agent_token", "admin_key"),
        ),
        (config.openai_address, "OpenAI API", credentials.missing("api_keys")),
        (config.web_address, "admin panel", credentials.missing("admin_key")),
    )
    for address, surface, missing in surfaces:
        check_exposure(address, surface, missing, allow_insecure=config.allow_insecure)
