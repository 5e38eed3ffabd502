"""``paddler balancer``: route generations to agents' free slots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import uvloop

from paddler.balancer.agent_registry import DEFAULT_MAX_AGENTS
from paddler.balancer.config import DEFAULT_MAX_WATCHERS, BalancerConfig
from paddler.balancer.routing_policy import RoutingName
from paddler.cli.failure import exit_on_domain_error
from paddler.cli.options import (
    AdminKeyFileOption,
    AgentTokenFileOption,
    AllowedHfOwnerOption,
    AllowedModelRootOption,
    AllowedUrlHostOption,
    AllowHttpModelsOption,
    AllowInsecureOption,
    GracePeriodOption,
    LogLevelOption,
    TlsCaOption,
    TlsCertOption,
    TlsClientCaOption,
    TlsKeyOption,
    TlsServerNameOption,
    client_tls,
    model_sources,
    server_tls,
)
from paddler.common.addresses import split_host_port
from paddler.common.body_limit import DEFAULT_MAX_BODY_BYTES
from paddler.common.logging import configure_logging
from paddler.common.status_interval import MIN_STALE_AFTER_S, STATUS_INTERVAL_S
from paddler.processes.balancer import run_balancer


def _check_stale_after(value: float) -> float:
    if value < MIN_STALE_AFTER_S:
        raise typer.BadParameter(
            f"must be at least {MIN_STALE_AFTER_S:g} s, got {value:g}: idle agents report every "
            f"{STATUS_INTERVAL_S:g} s, so a shorter limit would remove healthy agents"
        )
    return value


def _checked_address(address: str) -> str:
    """An empty address, or one with a host and a port."""
    if address:
        try:
            split_host_port(address)
        except ValueError as error:
            raise typer.BadParameter(f"{error}; use host:port") from None
    return address


def balancer(
    inference_addr: Annotated[
        str,
        typer.Option(
            envvar="PADDLER_INFERENCE_ADDR",
            help="Where clients call paddler.v1.InferenceService (port 0 picks one).",
        ),
    ] = "127.0.0.1:50051",
    management_addr: Annotated[
        str,
        typer.Option(
            envvar="PADDLER_MANAGEMENT_ADDR",
            help="Where agents register and operators call paddler.v1.ManagementService.",
        ),
    ] = "127.0.0.1:50053",
    max_buffered_requests: Annotated[
        int,
        typer.Option(
            min=0,
            envvar="PADDLER_MAX_BUFFERED_REQUESTS",
            help="Requests that may wait for a slot; more get RESOURCE_EXHAUSTED (0: none wait).",
        ),
    ] = 30,
    buffered_request_timeout: Annotated[
        float,
        typer.Option(
            min=0,
            envvar="PADDLER_BUFFERED_REQUEST_TIMEOUT",
            help="Seconds a request waits for a slot before UNAVAILABLE.",
        ),
    ] = 10.0,
    agent_stale_after: Annotated[
        float,
        typer.Option(
            envvar="PADDLER_AGENT_STALE_AFTER",
            callback=_check_stale_after,
            help="Seconds without a status snapshot after which an agent is removed "
            f"(at least {MIN_STALE_AFTER_S:g}: twice the agents' status interval).",
        ),
    ] = 5.0,
    max_attempts: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="PADDLER_MAX_ATTEMPTS",
            help="Agents tried per request when one fails (before its first piece, or mid-stream "
            "with --migrate).",
        ),
    ] = 3,
    rollout_max_unavailable: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="PADDLER_ROLLOUT_MAX_UNAVAILABLE",
            help="Serving agents a new desired state may take out of service at once; the "
            "others serve the state they have until their turn.",
        ),
    ] = 1,
    migrate: Annotated[
        bool,
        typer.Option(
            envvar="PADDLER_MIGRATE",
            help="When an agent fails mid-stream, resume the stream on another agent after the "
            "tokens generated so far (requests that may call tools excepted); off: the client "
            "gets UNAVAILABLE (AGENT_FAILED_MID_STREAM).",
        ),
    ] = True,
    client_idle_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            envvar="PADDLER_CLIENT_IDLE_TIMEOUT",
            help="Seconds a streaming client may leave a message unread; then its stream is "
            "cut (DEADLINE_EXCEEDED, CLIENT_IDLE) and its agent slot freed.",
        ),
    ] = 30.0,
    agent_idle_timeout: Annotated[
        float,
        typer.Option(
            min=1.0,
            envvar="PADDLER_AGENT_IDLE_TIMEOUT",
            help="Seconds a call to an agent may go without a message (the first one "
            "included: set it above the longest prefill) before it is cut and the request "
            "moves to another agent.",
        ),
    ] = 300.0,
    state_file: Annotated[
        Path | None,
        typer.Option(
            envvar="PADDLER_STATE_FILE",
            help="JSON file keeping the desired state across restarts (default: memory only).",
        ),
    ] = None,
    routing: Annotated[
        RoutingName,
        typer.Option(
            envvar="PADDLER_ROUTING",
            help="How an agent is chosen: 'speed' (soonest expected first token, then "
            "completion, from the speeds agents report and the prompt prefixes they hold), "
            "'slots' (fewest busy slots, prefixes held counting as free slots) or "
            "'round-robin' (each agent in turn, waiting for its slot: a baseline for "
            "benchmarks, not for production).",
        ),
    ] = "speed",
    openai_addr: Annotated[
        str,
        typer.Option(
            envvar="PADDLER_OPENAI_ADDR",
            help="Where the OpenAI-compatible HTTP API listens (port 0 picks one; empty: off).",
        ),
    ] = "127.0.0.1:8080",
    openai_model_alias: Annotated[
        list[str] | None,
        typer.Option(
            envvar="PADDLER_OPENAI_MODEL_ALIAS",
            help="Another model name OpenAI requests may use for the served model (repeatable).",
        ),
    ] = None,
    openai_cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            envvar="PADDLER_OPENAI_CORS_ORIGIN",
            help="An origin browsers may call the OpenAI API from (repeatable; none by default).",
        ),
    ] = None,
    allowed_image_host: Annotated[
        list[str] | None,
        typer.Option(
            envvar="PADDLER_ALLOWED_IMAGE_HOST",
            help="A host whose image URLs the OpenAI API fetches (repeatable; none by default: "
            "images come inline as data: URIs).",
        ),
    ] = None,
    web_addr: Annotated[
        str,
        typer.Option(
            envvar="PADDLER_WEB_ADDR",
            help="Where the web server listens: the admin panel at / and Prometheus metrics at "
            "/metrics (port 0 picks one; empty: off).",
        ),
    ] = "127.0.0.1:8081",
    metrics_addr: Annotated[
        str,
        typer.Option(
            envvar="PADDLER_METRICS_ADDR",
            help="Where Prometheus metrics alone are served at /metrics, open to scrapers with "
            "no key (port 0 picks one; empty: only on --web-addr).",
        ),
    ] = "",
    max_request_body: Annotated[
        int,
        typer.Option(
            min=1024,
            envvar="PADDLER_MAX_REQUEST_BODY",
            help="Largest HTTP request body in bytes (OpenAI API, admin panel); bigger ones get "
            "413 while they are read.",
        ),
    ] = DEFAULT_MAX_BODY_BYTES,
    api_keys_file: Annotated[
        Path | None,
        typer.Option(
            envvar="PADDLER_API_KEYS_FILE",
            help="File of client API keys, one 'name:key' or 'name:key:max_concurrent' per "
            "line, re-read when it changes: inference (gRPC and OpenAI) needs one (default: "
            "none, open).",
        ),
    ] = None,
    admin_key_file: AdminKeyFileOption = None,
    agent_token_file: AgentTokenFileOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
    tls_client_ca: TlsClientCaOption = None,
    tls_ca: TlsCaOption = None,
    tls_server_name: TlsServerNameOption = "",
    allow_insecure: AllowInsecureOption = False,
    max_agents: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="PADDLER_MAX_AGENTS",
            help="The most agents registered at once; one more is refused with RESOURCE_EXHAUSTED.",
        ),
    ] = DEFAULT_MAX_AGENTS,
    max_watchers: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="PADDLER_MAX_WATCHERS",
            help="The most live views at once (WatchAgents streams and the admin panel's "
            "event streams); one more is refused with RESOURCE_EXHAUSTED (HTTP 429).",
        ),
    ] = DEFAULT_MAX_WATCHERS,
    allowed_model_root: AllowedModelRootOption = None,
    allowed_hf_owner: AllowedHfOwnerOption = None,
    allowed_url_host: AllowedUrlHostOption = None,
    allow_http_models: AllowHttpModelsOption = False,
    web_allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            envvar="PADDLER_WEB_ALLOWED_HOST",
            help="Another host name the admin panel answers to in the Host header (repeatable): "
            "its name behind a proxy or in DNS. IP addresses, localhost and the host of "
            "--web-addr always are; other names get 403 (DNS rebinding).",
        ),
    ] = None,
    statsd_addr: Annotated[
        str,
        typer.Option(
            envvar="PADDLER_STATSD_ADDR",
            help="A StatsD server (host:port) to push the cluster's gauges to every second "
            "(empty: off).",
            callback=_checked_address,
        ),
    ] = "",
    statsd_prefix: Annotated[
        str,
        typer.Option(envvar="PADDLER_STATSD_PREFIX", help="Prefix of the StatsD gauge names."),
    ] = "paddler",
    grace_period: GracePeriodOption = 30.0,
    log_level: LogLevelOption = "info",
) -> None:
    """Balance generations across agents by their free slots, with a fair bounded buffer."""
    configure_logging(log_level)
    tls = server_tls(tls_cert, tls_key, tls_client_ca)
    config = BalancerConfig(
        inference_address=inference_addr,
        management_address=management_addr,
        max_buffered_requests=max_buffered_requests,
        buffered_request_timeout_s=buffered_request_timeout,
        agent_stale_after_s=agent_stale_after,
        grace_period_s=grace_period,
        max_attempts=max_attempts,
        rollout_max_unavailable=rollout_max_unavailable,
        migrate=migrate,
        client_idle_timeout_s=client_idle_timeout,
        agent_idle_timeout_s=agent_idle_timeout,
        state_file=state_file,
        routing=routing,
        openai_address=openai_addr,
        openai_model_aliases=tuple(openai_model_alias or ()),
        openai_cors_origins=tuple(openai_cors_origin or ()),
        openai_image_hosts=tuple(allowed_image_host or ()),
        web_address=web_addr,
        statsd_address=statsd_addr,
        statsd_prefix=statsd_prefix,
        metrics_address=metrics_addr,
        allow_insecure=allow_insecure,
        tls=tls,
        agent_tls=client_tls(tls_ca, tls_server_name, tls),
        agent_token_file=agent_token_file,
        admin_key_file=admin_key_file,
        api_keys_file=api_keys_file,
        max_body_bytes=max_request_body,
        sources=model_sources(
            allowed_model_root, allowed_hf_owner, allowed_url_host, allow_http=allow_http_models
        ),
        max_agents=max_agents,
        max_watchers=max_watchers,
        web_allowed_hosts=tuple(web_allowed_host or ()),
    )
    with exit_on_domain_error():
        # uvloop: the balancer relays every token through its event loop (about half of its
        # CPU per relayed message; the rest is gRPC's own threads).
        uvloop.run(run_balancer(config))
