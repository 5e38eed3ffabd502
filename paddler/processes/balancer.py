"""Runs a balancer: an inference server for clients, a management server for agents, the
OpenAI-compatible API and the web server, each with its credentials and TLS."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, replace

import structlog
from fastapi import FastAPI

from paddler.balancer.agent_registry import AgentRegistry
from paddler.balancer.config import BalancerConfig
from paddler.balancer.embedding_relay import EmbeddingRelay
from paddler.balancer.generation_relay import GenerationRelay
from paddler.balancer.inference_servicer import SERVICE as INFERENCE_SERVICE
from paddler.balancer.inference_servicer import InferenceServicer
from paddler.balancer.management_servicer import ManagementServicer
from paddler.balancer.metrics import BalancerMetrics
from paddler.balancer.model_routes import ModelRoutes
from paddler.balancer.prefix_index import PrefixIndex
from paddler.balancer.registry_servicer import AgentRegistryServicer
from paddler.balancer.rollout import Rollout
from paddler.balancer.round_robin_policy import RoundRobinPolicy
from paddler.balancer.routing_policy import RoutingName, RoutingPolicy
from paddler.balancer.slot_dispatcher import SlotDispatcher
from paddler.balancer.slot_policy import SlotPolicy
from paddler.balancer.speed_policy import SpeedPolicy
from paddler.balancer.state_store import StateStore
from paddler.balancer.statsd_reporter import report_to_statsd
from paddler.common.concurrency_limit import ConcurrencyLimit
from paddler.common.dialer import Dialer
from paddler.common.grpc_server import ManagedServer
from paddler.common.guards import Guard
from paddler.common.http_server import HttpServer
from paddler.common.supervision import BackgroundTaskDiedError, until_stopped
from paddler.openai_api.app import OpenAISettings, create_app
from paddler.processes.balancer_credentials import BalancerCredentials, check_balancer_exposure
from paddler.v1 import (
    agent_registry_pb2,
    agent_registry_pb2_grpc,
    management_pb2,
    management_pb2_grpc,
)
from paddler.web.app import create_web_app
from paddler.web.panel import add_panel

log = structlog.get_logger(__name__)

REGISTRY_SERVICE = agent_registry_pb2.DESCRIPTOR.services_by_name["AgentRegistryService"].full_name
MANAGEMENT_SERVICE = management_pb2.DESCRIPTOR.services_by_name["ManagementService"].full_name
STALE_CHECK_INTERVAL_S = 0.5
LATE_WAKE_S = 1.0


async def _watch_agents(core: _Core, config: BalancerConfig) -> None:
    """Remove agents gone silent, cut calls gone silent and streams whose clients stopped
    reading; dial agents anew after a certificate rotation. A round that woke late (the
    balancer's own loop stalled) judges nothing: statuses and messages wait in the queue
    behind the stall, and a stalled loop is not a dead fleet."""
    registry = core.registry
    while True:
        slept_at = time.monotonic()
        await asyncio.sleep(STALE_CHECK_INTERVAL_S)
        late_s = time.monotonic() - slept_at - STALE_CHECK_INTERVAL_S
        if late_s > LATE_WAKE_S:
            log.warning("event loop stalled: no agent judged stale this round", late_s=late_s)
            continue
        await registry.remove_stale(config.agent_stale_after_s)
        core.dispatcher.cut_stuck_streams(config.agent_idle_timeout_s, config.client_idle_timeout_s)
        registry.redial_if_rotated()


def _guards(guards: dict[str, Guard | None]) -> dict[str, Guard]:
    return {service: guard for service, guard in guards.items() if guard is not None}


def routing_policy(name: RoutingName, prefixes: PrefixIndex | None = None) -> RoutingPolicy:
    """The policy ``--routing`` names; the slot and speed policies weigh the prompt prefixes
    ``prefixes`` says agents hold."""
    if name == "slots":
        return SlotPolicy(prefixes)
    if name == "speed":
        return SpeedPolicy(prefixes)
    return RoundRobinPolicy()


@dataclass(frozen=True)
class _Core:
    """What every surface of one balancer shares."""

    registry: AgentRegistry
    states: StateStore
    rollout: Rollout
    dispatcher: SlotDispatcher
    metrics: BalancerMetrics
    relay: GenerationRelay
    embeddings: EmbeddingRelay
    watchers: ConcurrencyLimit
    routes: ModelRoutes


def _core(config: BalancerConfig, credentials: BalancerCredentials) -> _Core:
    registry = AgentRegistry(Dialer(config.agent_tls, credentials.agent_token), config.max_agents)
    states = StateStore(config.state_file, config.sources)
    metrics = BalancerMetrics()
    rollout = Rollout(registry, states, config.rollout_max_unavailable, metrics.rollout_failed)
    dispatcher = SlotDispatcher(
        registry,
        states,
        config.max_buffered_requests,
        config.buffered_request_timeout_s,
        routing_policy(config.routing, registry.prefixes),
    )
    relay = GenerationRelay(
        dispatcher,
        config.max_attempts,
        metrics,
        migrate=config.migrate,
        client_idle_timeout_s=config.client_idle_timeout_s,
    )
    embeddings = EmbeddingRelay(
        dispatcher, config.max_attempts, metrics, config.agent_idle_timeout_s
    )
    watchers = ConcurrencyLimit(config.max_watchers, "live views", "--max-watchers")
    routes = ModelRoutes(registry, states, config.openai_model_aliases)
    metrics.watch(registry, rollout, dispatcher.buffered_in, routes.pools)
    return _Core(
        registry, states, rollout, dispatcher, metrics, relay, embeddings, watchers, routes
    )


def _grpc_servers(
    core: _Core, credentials: BalancerCredentials
) -> tuple[ManagedServer, ManagedServer]:
    """The inference server (clients, with their API keys) and the management server (agents
    with the agent token, operators with the admin key)."""
    refused = core.metrics.credential_refused
    inference = ManagedServer(
        [INFERENCE_SERVICE], _guards({INFERENCE_SERVICE: credentials.client_guard()}), refused
    )
    inference.server.add_generic_rpc_handlers(
        (InferenceServicer(core.relay, core.embeddings, core.routes, core.metrics).handler(),)
    )
    guards = {
        REGISTRY_SERVICE: credentials.agent_guard(),
        MANAGEMENT_SERVICE: credentials.admin_guard(),
    }
    management = ManagedServer([REGISTRY_SERVICE, MANAGEMENT_SERVICE], _guards(guards), refused)
    agent_registry_pb2_grpc.add_AgentRegistryServiceServicer_to_server(
        AgentRegistryServicer(core.registry, core.rollout), management.server
    )
    management_pb2_grpc.add_ManagementServiceServicer_to_server(
        ManagementServicer(
            core.registry, core.dispatcher, core.rollout, core.watchers, core.routes
        ),
        management.server,
    )
    return inference, management


def _http_apps(
    core: _Core, config: BalancerConfig, credentials: BalancerCredentials, stopping: asyncio.Event
) -> dict[str, tuple[str, FastAPI]]:
    """The HTTP apps configured, by name: their addresses and apps."""
    apps: dict[str, tuple[str, FastAPI]] = {}
    metrics = core.metrics
    if config.openai_address:
        settings = OpenAISettings(
            config.openai_model_aliases,
            config.openai_cors_origins,
            max_body_bytes=config.max_body_bytes,
            guard=credentials.client_guard(),
            on_refused=metrics.credential_refused,
            image_hosts=config.openai_image_hosts,
        )
        app = create_app(core.relay, core.embeddings, core.routes, settings, metrics)
        apps["openai"] = (config.openai_address, app)
    if config.web_address:
        web = create_web_app(
            metrics.registry, "Paddler balancer", max_body_bytes=config.max_body_bytes
        )
        add_panel(
            web,
            registry=core.registry,
            dispatcher=core.dispatcher,
            states=core.states,
            rollout=core.rollout,
            relay=core.relay,
            routes=core.routes,
            metrics=metrics,
            stopping=stopping,
            admin=credentials.admin_guard(),
            watchers=core.watchers,
            allowed_hosts=config.web_allowed_hosts,
            address=config.web_address,
        )
        apps["web"] = (config.web_address, web)
    if config.metrics_address:
        only_metrics = create_web_app(metrics.registry, "Paddler balancer metrics")
        apps["metrics"] = (config.metrics_address, only_metrics)
    return apps


async def run_balancer(config: BalancerConfig) -> None:
    """Serve until SIGTERM/SIGINT, then drain in-flight streams within the grace period."""
    credentials = BalancerCredentials.load(config)
    check_balancer_exposure(config, credentials)
    core = _core(config, credentials)
    inference, management = _grpc_servers(core, credentials)
    tls = config.tls
    # Only agents (on the management port) are asked for a client certificate.
    open_tls = replace(tls, client_ca=None) if tls else None
    stopping = asyncio.Event()
    http: dict[str, HttpServer] = {}
    try:
        listening = {
            "inference": await inference.start(config.inference_address, open_tls),
            "management": await management.start(config.management_address, tls),
        }
        for name, (address, app) in _http_apps(core, config, credentials, stopping).items():
            server = HttpServer(app)
            listening[name] = await server.start(address, config.grace_period_s, open_tls)
            http[name] = server
    except BaseException:  # a port in use: close what started, on this loop
        await asyncio.gather(
            inference.server.stop(None),
            management.server.stop(None),
            *(server.stop() for server in http.values()),
        )
        raise
    await inference.set_serving(serving=True)
    await management.set_serving(serving=True)
    log.info(
        "balancer listening",
        **listening,
        routing=config.routing,
        tls=tls is not None,
        mutual_tls=tls is not None and tls.client_ca is not None,
        api_keys=credentials.api_keys is not None,
        admin_key=credentials.admin_key is not None,
        agent_token=credentials.agent_token is not None,
    )
    watchdog = asyncio.create_task(_watch_agents(core, config))
    reporter = None
    if config.statsd_address:
        reporter = asyncio.create_task(
            report_to_statsd(
                config.statsd_address,
                config.statsd_prefix,
                core.registry,
                lambda: core.dispatcher.buffered,
            )
        )
    supervised = {
        "agent watchdog": watchdog,
        **{f"{name} server": server.task for name, server in http.items()},
    }
    if reporter is not None:
        supervised["statsd reporter"] = reporter
    failure = None
    try:
        await until_stopped(supervised)
    except BackgroundTaskDiedError as error:
        failure = error
    stopping.set()
    await asyncio.gather(
        inference.drain(config.grace_period_s), *(server.stop() for server in http.values())
    )
    for task in (watchdog, reporter):
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    await management.drain(0)
    if failure is not None:
        raise failure
    log.info("balancer stopped")
