"""Runs an agent: gRPC server up first (NOT_SERVING), then a model, then SERVING until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import replace

import structlog

from paddler.agent.balancer_link import BalancerLink
from paddler.agent.config import AgentConfig
from paddler.agent.default_model import default_model_path
from paddler.agent.devices import Devices
from paddler.agent.llama_logging import route_llama_logs
from paddler.agent.llama_model import check_model_file
from paddler.agent.metrics import AgentMetrics
from paddler.agent.model_host import ModelHost
from paddler.agent.servicer import AgentServicer
from paddler.common.addresses import is_local_host, join_host_port, loopback_for, split_host_port
from paddler.common.dialer import Dialer
from paddler.common.exposure import check_exposure
from paddler.common.grpc_server import ManagedServer
from paddler.common.guards import Guard, SecretGuard
from paddler.common.http_server import HttpServer
from paddler.common.secret_file import SecretFile
from paddler.common.supervision import BackgroundTaskDiedError, until_stopped
from paddler.v1 import agent_pb2, agent_pb2_grpc, desired_state_pb2
from paddler.web.app import create_web_app

log = structlog.get_logger(__name__)

AGENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name


def advertised_address(host: str, bound: str) -> str:
    """Where the balancer should dial: ``$POD_IP``, else the listen host (a loopback of its
    family for a local or wildcard one), with the bound port."""
    port = split_host_port(bound)[1]
    reachable = os.environ.get("POD_IP") or (loopback_for(host) if is_local_host(host) else host)
    return join_host_port(reachable, port)


async def _cancel(task: asyncio.Task[None]) -> None:
    if task.done():  # a task that died was reported by the supervision already
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def run_agent(config: AgentConfig) -> None:
    """Serve until SIGTERM/SIGINT, then drain within the grace period.

    With ``--model``, or without a balancer, the local model loads at once; otherwise the
    agent waits for the balancer's desired state (which says "your own" when none is set).
    """
    serves_local_model = config.model is not None or not config.balancer
    if serves_local_model:
        check_model_file(config.model or default_model_path())
    token = SecretFile(config.agent_token_file, "agent token") if config.agent_token_file else None
    listen = join_host_port(config.host, config.port)
    check_exposure(
        listen,
        "agent",
        "" if token else "agent token (--agent-token-file)",
        allow_insecure=config.allow_insecure,
    )
    route_llama_logs()
    devices = Devices()
    servicer = AgentServicer(config.name, config.slots, devices)
    metrics = AgentMetrics()
    metrics.watch(servicer.occupancy)
    metrics.watch_devices(devices.now)
    host = ModelHost(config, servicer, metrics)
    guards: dict[str, Guard] = {}
    if token is not None:
        guards[AGENT_SERVICE] = SecretGuard(token, "the agent token", "balancer")
    managed = ManagedServer([AGENT_SERVICE], guards, metrics.credential_refused)
    agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, managed.server)
    address = await managed.start(listen, config.tls)
    web = HttpServer(create_web_app(metrics.registry, "Paddler agent"))
    metrics_address = await _serve_metrics(web, config, managed)
    log.info(
        "agent listening",
        address=address,
        metrics=metrics_address,
        name=config.name,
        pool=config.pool,
        slots=config.slots,
        tls=config.tls is not None,
        agent_token=token is not None,
    )
    hosting = asyncio.create_task(host.run())
    if serves_local_model:
        host.submit(desired_state_pb2.VersionedDesiredState())
    link = None
    if config.balancer:
        advertise = config.advertise or advertised_address(config.host, address)
        link = asyncio.create_task(
            BalancerLink(
                config.balancer,
                advertise,
                servicer,
                host.submit,
                Dialer(config.balancer_tls, token),
                pool=config.pool,
            ).run()
        )
    watchers = {
        "health": asyncio.create_task(_report_health(servicer, managed)),
        "engine watchdog": asyncio.create_task(
            _watch_engine(servicer, config.engine_stall_after_s)
        ),
    }
    supervised = {"model host": hosting, **watchers}
    if link is not None:
        supervised["balancer link"] = link
    if metrics_address is not None:
        supervised["metrics server"] = web.task
    failure = None
    try:
        await until_stopped(supervised)
    except BackgroundTaskDiedError as error:
        failure = error
    if link is not None:  # leave the balancer first so it stops sending new requests here
        await _cancel(link)
    for task in watchers.values():
        await _cancel(task)
    await managed.drain(config.grace_period_s)
    await web.stop()
    await _cancel(hosting)
    if failure is not None:
        raise failure
    log.info("agent stopped")


async def _serve_metrics(
    web: HttpServer, config: AgentConfig, managed: ManagedServer
) -> str | None:
    """Start the metrics server when --metrics-addr asks for one; its bound address. A port in
    use closes the started gRPC server (on this loop) before the error goes up."""
    if not config.metrics_address:
        return None
    open_tls = replace(config.tls, client_ca=None) if config.tls else None
    try:
        return await web.start(config.metrics_address, config.grace_period_s, open_tls)
    except BaseException:
        await managed.server.stop(None)
        raise


async def _watch_engine(servicer: AgentServicer, stall_after_s: float) -> None:
    """Judge the engine's liveness a few times per --engine-stall-after."""
    while True:
        await asyncio.sleep(min(1.0, stall_after_s / 4))
        servicer.check_engine(stall_after_s)


async def _report_health(servicer: AgentServicer, managed: ManagedServer) -> None:
    """Keep grpc.health in step with whether a model is loaded, and liveness with whether the
    engine steps."""
    serving, alive = False, True
    while True:
        await servicer.readiness_changed.wait()
        servicer.readiness_changed.clear()
        if servicer.stalled == alive:
            alive = not servicer.stalled
            await managed.set_alive(alive=alive)
        status = servicer.status()
        if status.ready != serving:
            serving = status.ready
            await managed.set_serving(serving=serving)
            log.info("agent ready" if serving else "agent not ready", model=status.model)
