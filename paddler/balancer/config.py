"""Settings of one balancer process (filled from the ``paddler balancer`` flags)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from paddler.balancer.agent_registry import DEFAULT_MAX_AGENTS
from paddler.balancer.routing_policy import RoutingName
from paddler.common.body_limit import DEFAULT_MAX_BODY_BYTES
from paddler.common.model_sources import ModelSourcePolicy
from paddler.common.tls import ClientTls, ServerTls

DEFAULT_MAX_WATCHERS = 64


@dataclass(frozen=True)
class BalancerConfig:
    """Everything ``paddler balancer`` needs to run."""

    inference_address: str
    management_address: str
    max_buffered_requests: int
    buffered_request_timeout_s: float
    agent_stale_after_s: float
    grace_period_s: float
    max_attempts: int
    # JSON file that keeps the desired state across restarts; None keeps it in memory.
    state_file: Path | None
    routing: RoutingName = "speed"
    # Agents that serve and may be out of service at once to apply a new desired state.
    rollout_max_unavailable: int = 1
    # Resume a stream on another agent when its agent fails mid-stream.
    migrate: bool = True
    # Seconds a client may leave a message of its stream unread before the stream is cut.
    client_idle_timeout_s: float = 30.0
    # Seconds a call to an agent may go without a message before it is cut (and resumed).
    agent_idle_timeout_s: float = 300.0
    # Where the OpenAI-compatible HTTP API listens; "" turns it off.
    openai_address: str = ""
    # Other model names OpenAI requests may use for the served model.
    openai_model_aliases: tuple[str, ...] = ()
    # Origins browsers may call the OpenAI API from (CORS); none by default.
    openai_cors_origins: tuple[str, ...] = ()
    # Hosts whose image URLs the OpenAI API fetches; none by default (data: URIs only).
    openai_image_hosts: tuple[str, ...] = ()
    # Where the web server (Prometheus metrics) listens; "" turns it off.
    web_address: str = ""
    # A StatsD server to push the gauges to every second; "" turns it off.
    statsd_address: str = ""
    statsd_prefix: str = "paddler"
    # Prometheus metrics alone, on a port of their own; "" serves them only on the web port.
    metrics_address: str = ""
    # Listen beyond loopback even where a surface's credentials are not configured.
    allow_insecure: bool = False
    # TLS on every port (the management port asks agents for a certificate with client_ca).
    tls: ServerTls | None = None
    # How agents are dialled: TLS (their CA, the name their certificates carry) or plain.
    agent_tls: ClientTls | None = None
    # Credentials, each a file re-read when it changes; None leaves that surface open.
    agent_token_file: Path | None = None
    admin_key_file: Path | None = None
    api_keys_file: Path | None = None
    # HTTP request bodies above this are refused with 413 while they are read.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # The most agents registered, and the most live views (WatchAgents, the panel's) at once.
    max_agents: int = DEFAULT_MAX_AGENTS
    max_watchers: int = DEFAULT_MAX_WATCHERS
    # Host names the admin panel answers to besides IPs, localhost and --web-addr's host.
    web_allowed_hosts: tuple[str, ...] = ()
    # Where desired states may take models from (empty lists: anywhere).
    sources: ModelSourcePolicy = field(default_factory=ModelSourcePolicy)
