"""Runs an agent: gRPC server up first (NOT_SERVING), then the model, then SERVING until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os

import structlog

from paddler.agent.balancer_link import BalancerLink
from paddler.agent.config import AgentConfig
from paddler.agent.engine import Engine, EngineConfig
from paddler.agent.job_factory import JobFactory
from paddler.agent.llama_logging import route_llama_logs
from paddler.agent.llama_model import LlamaModel, check_model_file
from paddler.agent.servicer import AgentServicer
from paddler.common.grpc_server import ManagedServer, wait_for_termination_signal
from paddler.v1 import agent_pb2, agent_pb2_grpc

log = structlog.get_logger(__name__)

AGENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name


def advertised_address(host: str, bound: str) -> str:
    """Where the balancer should dial: ``$POD_IP``, else the listen host, with the bound port."""
    port = bound.rsplit(":", 1)[1]
    reachable = os.environ.get("POD_IP") or (
        "127.0.0.1" if host in ("0.0.0.0", "::", "[::]", "") else host  # noqa: S104
    )
    return f"{reachable}:{port}"


def load_engine(config: AgentConfig) -> tuple[Engine, JobFactory]:
    """Load the model and build the context (blocking; run it off the event loop)."""
    model = LlamaModel(config.model)
    engine = Engine(
        model,
        EngineConfig(
            slots=config.slots,
            context_size=config.context_size,
            batch_size=config.batch_size,
            threads=config.threads,
        ),
    )
    return engine, JobFactory(model, engine.context_per_slot)


async def run_agent(config: AgentConfig) -> None:
    """Serve until SIGTERM/SIGINT, then drain within the grace period."""
    check_model_file(config.model)
    route_llama_logs()
    servicer = AgentServicer(config.name, config.slots)
    managed = ManagedServer([AGENT_SERVICE])
    agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, managed.server)
    address = await managed.start(f"{config.host}:{config.port}")
    log.info("agent listening", address=address, name=config.name, slots=config.slots)
    link = None
    if config.balancer:
        advertise = config.advertise or advertised_address(config.host, address)
        link = asyncio.create_task(BalancerLink(config.balancer, advertise, servicer).run())
    try:
        engine, jobs = await asyncio.to_thread(load_engine, config)
    except BaseException:
        await managed.server.stop(None)
        raise
    engine.start(asyncio.get_running_loop())
    servicer.attach(engine, jobs)
    await managed.set_serving(serving=True)
    log.info(
        "agent ready",
        model=engine.model.name,
        slots=config.slots,
        context_per_slot=engine.context_per_slot,
        threads=config.threads,
    )
    await wait_for_termination_signal()
    if link is not None:  # leave the balancer first so it stops sending new requests here
        link.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await link
    await managed.drain(config.grace_period_s)
    engine.stop()
    log.info("agent stopped")
