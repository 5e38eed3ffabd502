"""Runs a balancer: an inference server for clients, a management server for agents."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from paddler.balancer.agent_registry import AgentRegistry
from paddler.balancer.config import BalancerConfig
from paddler.balancer.embedding_relay import EmbeddingRelay
from paddler.balancer.generation_relay import GenerationRelay
from paddler.balancer.inference_servicer import SERVICE as INFERENCE_SERVICE
from paddler.balancer.inference_servicer import InferenceServicer
from paddler.balancer.management_servicer import ManagementServicer
from paddler.balancer.metrics import BalancerMetrics
from paddler.balancer.registry_servicer import AgentRegistryServicer
from paddler.balancer.round_robin_policy import RoundRobinPolicy
from paddler.balancer.routing_policy import RoutingName, RoutingPolicy
from paddler.balancer.slot_dispatcher import SlotDispatcher
from paddler.balancer.slot_policy import SlotPolicy
from paddler.balancer.speed_policy import SpeedPolicy
from paddler.balancer.state_store import StateStore
from paddler.balancer.statsd_reporter import report_to_statsd
from paddler.common.grpc_server import ManagedServer, wait_for_termination_signal
from paddler.common.http_server import HttpServer
from paddler.openai_api.app import OpenAISettings, create_app
from paddler.openai_api.served_models import ServedModels
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


async def _remove_stale_agents(registry: AgentRegistry, stale_after_s: float) -> None:
    while True:
        await asyncio.sleep(STALE_CHECK_INTERVAL_S)
        await registry.remove_stale(stale_after_s)


def routing_policy(name: RoutingName) -> RoutingPolicy:
    """The policy ``--routing`` names."""
    policies: dict[RoutingName, type[RoutingPolicy]] = {
        "slots": SlotPolicy,
        "speed": SpeedPolicy,
        "round-robin": RoundRobinPolicy,
    }
    return policies[name]()


async def run_balancer(config: BalancerConfig) -> None:
    """Serve until SIGTERM/SIGINT, then drain in-flight streams within the grace period."""
    registry = AgentRegistry()
    states = StateStore(config.state_file)
    states.listen(registry.broadcast)
    dispatcher = SlotDispatcher(
        registry,
        states,
        config.max_buffered_requests,
        config.buffered_request_timeout_s,
        routing_policy(config.routing),
    )
    metrics = BalancerMetrics()
    metrics.watch(registry, states, lambda: dispatcher.buffered)
    relay = GenerationRelay(dispatcher, config.max_attempts, metrics)
    embeddings = EmbeddingRelay(dispatcher, config.max_attempts, metrics)
    inference = ManagedServer([INFERENCE_SERVICE])
    inference.server.add_generic_rpc_handlers(
        (InferenceServicer(relay, embeddings, metrics).handler(),)
    )
    management = ManagedServer([REGISTRY_SERVICE, MANAGEMENT_SERVICE])
    agent_registry_pb2_grpc.add_AgentRegistryServiceServicer_to_server(
        AgentRegistryServicer(registry, states), management.server
    )
    management_pb2_grpc.add_ManagementServiceServicer_to_server(
        ManagementServicer(registry, dispatcher, states), management.server
    )
    inference_address = await inference.start(config.inference_address)
    management_address = await management.start(config.management_address)
    http = None
    openai_address = None
    if config.openai_address:
        models = ServedModels(registry, states, config.openai_model_aliases)
        settings = OpenAISettings(config.openai_model_aliases, config.openai_cors_origins)
        http = HttpServer(create_app(relay, embeddings, models, settings, metrics))
        openai_address = await http.start(config.openai_address, config.grace_period_s)
        log.info("openai listening", address=openai_address)
    web = None
    web_address = None
    stopping = asyncio.Event()
    if config.web_address:
        app = create_web_app(metrics.registry, "Paddler balancer")
        add_panel(
            app,
            registry=registry,
            dispatcher=dispatcher,
            states=states,
            relay=relay,
            metrics=metrics,
            stopping=stopping,
        )
        web = HttpServer(app)
        web_address = await web.start(config.web_address, config.grace_period_s)
    await inference.set_serving(serving=True)
    await management.set_serving(serving=True)
    log.info(
        "balancer listening",
        inference=inference_address,
        management=management_address,
        openai=openai_address,
        web=web_address,
        routing=config.routing,
    )
    watchdog = asyncio.create_task(_remove_stale_agents(registry, config.agent_stale_after_s))
    reporter = None
    if config.statsd_address:
        reporter = asyncio.create_task(
            report_to_statsd(
                config.statsd_address,
                config.statsd_prefix,
                registry,
                lambda: dispatcher.buffered,
            )
        )
    await wait_for_termination_signal()
    stopping.set()
    await asyncio.gather(
        inference.drain(config.grace_period_s),
        http.stop() if http else asyncio.sleep(0),
        web.stop() if web else asyncio.sleep(0),
    )
    for task in (watchdog, reporter):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    await management.drain(0)
    log.info("balancer stopped")
