"""The agents the balancer knows: their last snapshot, its own claims on them, their channels."""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from grpc import aio

from paddler.balancer.agent_speed import AgentSpeed
from paddler.balancer.prefix_index import PrefixIndex
from paddler.common.dialer import Dialer, Metadata
from paddler.common.errors import ResourceExhaustedError
from paddler.common.pool_names import DEFAULT_POOL
from paddler.v1 import agent_pb2, agent_registry_pb2, desired_state_pb2, status_pb2

if TYPE_CHECKING:
    from paddler.balancer.stream_claim import StreamClaim

log = structlog.get_logger(__name__)

DEFAULT_MAX_AGENTS = 1024
# Calls on a channel replaced after a certificate rotation may run this long before it closes.
REDIAL_GRACE_S = 3600.0
GENERATE_METHOD = "/paddler.v1.AgentService/Generate"


class TooManyAgentsError(ResourceExhaustedError):
    """The registry is full."""

    reason = "TOO_MANY_AGENTS"


EMBED_METHOD = "/paddler.v1.AgentService/Embed"


@dataclass(eq=False)
class RegisteredAgent:
    """One connected agent. ``streams`` are this balancer's requests running on it."""

    agent_id: str
    name: str
    address: str
    channel: aio.Channel
    # The pool the agent joined: it is sent that pool's state and serves its requests.
    pool: str = DEFAULT_POOL
    # The last snapshot; ``ready`` is cleared locally until the next one when the agent may be
    # swapping models (a desired state was sent, or it answered NOT_READY).
    status: status_pb2.AgentStatus = field(default_factory=status_pb2.AgentStatus)
    last_status_at: float = field(default_factory=time.monotonic)
    streams: set[StreamClaim] = field(default_factory=set)
    # Busy slots the last snapshot showed beyond our claims: other clients of the agent.
    external_busy: int = 0
    # The speed the last snapshot reported (None before it timed a decode step).
    speed: AgentSpeed | None = None
    # Removed from the registry; its channel closes when its last stream ends.
    retired: bool = False
    # Messages for the agent's Connect stream; None ends it.
    outbox: asyncio.Queue[agent_registry_pb2.ConnectResponse | None] = field(
        default_factory=asyncio.Queue
    )
    # What each call to the agent presents (the agent token, read again when rotated).
    call_metadata: Callable[[], Metadata | None] = lambda: None
    # Whether a status snapshot came since registration.
    reported: bool = False
    # The desired state last sent to the agent (None: none yet), and whether the rollout took
    # it out of service for that (counted against --rollout-max-unavailable).
    sent: desired_state_pb2.VersionedDesiredState | None = None
    rolling: bool = False

    @property
    def claims(self) -> int:
        """This balancer's streams running on the agent now."""
        return len(self.streams)

    @property
    def busy_slots(self) -> int:
        """Our claims, exact at every moment, plus what others ran there at the last snapshot."""
        return self.claims + self.external_busy

    @property
    def serving(self) -> bool:
        """Whether requests may go to the agent: it has a model loaded (whichever state it is
        on: during a rollout agents serve the state they have until they apply the new one)."""
        return self.status.ready and not self.retired

    def free_slots(self) -> int:
        """Slots a new request may take now."""
        if not self.serving:
            return 0
        return max(self.status.slots_total - self.busy_slots, 0)

    def on_state(self, state: desired_state_pb2.VersionedDesiredState) -> bool:
        """Whether the agent's last snapshot says it serves ``state`` (its version in its
        epoch: a balancer restarted without a state file counts from 1 again)."""
        status = self.status
        return (
            status.phase == status_pb2.STATE_PHASE_APPLIED
            and status.applied_state_version == state.version
            and status.applied_state_epoch == state.epoch
        )

    def failed_state(self, state: desired_state_pb2.VersionedDesiredState) -> bool:
        """Whether the agent's last snapshot says ``state`` failed on it."""
        status = self.status
        return (
            status.phase == status_pb2.STATE_PHASE_FAILED
            and status.attempted_state_version == state.version
            and status.attempted_state_epoch == state.epoch
        )

    @functools.cached_property
    def _generate(self) -> aio.UnaryStreamMultiCallable[agent_pb2.GenerateRequest, bytes]:
        return self.channel.unary_stream(
            GENERATE_METHOD, request_serializer=agent_pb2.GenerateRequest.SerializeToString
        )

    def redial(self, channel: aio.Channel) -> aio.Channel:
        """Make new calls on ``channel``; return the old one (its calls go on until closed)."""
        old, self.channel = self.channel, channel
        self.__dict__.pop("_generate", None)
        self.__dict__.pop("_embed", None)
        return old

    def generate(
        self, request: agent_pb2.GenerateRequest, timeout: float | None
    ) -> aio.UnaryStreamCall[agent_pb2.GenerateRequest, bytes]:
        """Start a Generate call whose responses arrive as raw bytes, relayed unparsed."""
        return self._generate(request, timeout=timeout, metadata=self.call_metadata())

    @functools.cached_property
    def _embed(
        self,
    ) -> aio.UnaryUnaryMultiCallable[agent_pb2.EmbedRequest, agent_pb2.EmbedResponse]:
        return self.channel.unary_unary(
            EMBED_METHOD,
            request_serializer=agent_pb2.EmbedRequest.SerializeToString,
            response_deserializer=agent_pb2.EmbedResponse.FromString,
        )

    def embed(
        self, request: agent_pb2.EmbedRequest, timeout: float | None
    ) -> aio.UnaryUnaryCall[agent_pb2.EmbedRequest, agent_pb2.EmbedResponse]:
        """Start an Embed call."""
        return self._embed(request, timeout=timeout, metadata=self.call_metadata())


class AgentRegistry:
    """Agents by id; every change is announced to the listeners (dispatcher, watchers)."""

    def __init__(self, dialer: Dialer | None = None, max_agents: int = DEFAULT_MAX_AGENTS) -> None:
        self._dialer = dialer or Dialer()
        self._max_agents = max_agents
        self._agents: dict[str, RegisteredAgent] = {}
        self._ids = itertools.count(1)
        self._listeners: list[Callable[[], None]] = []
        self._closing: set[asyncio.Task[None]] = set()
        # Which agents hold which prompt prefixes (prefix-aware routing reads it).
        self.prefixes = PrefixIndex()

    def listen(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after every change; returns the function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def changed(self) -> None:
        """Tell the listeners that something changed."""
        for listener in list(self._listeners):
            listener()

    def agents(self) -> list[RegisteredAgent]:
        """The registered agents, in registration order."""
        return list(self._agents.values())

    def in_pool(self, pool: str) -> list[RegisteredAgent]:
        """The registered agents of ``pool``, in registration order."""
        return [agent for agent in self._agents.values() if agent.pool == pool]

    async def add(self, name: str, address: str, pool: str = DEFAULT_POOL) -> RegisteredAgent:
        """Register an agent of ``pool`` and open the channel the balancer dials it on.

        An entry with the same address is an earlier connection of the same agent: it goes.
        """
        for earlier in self.agents():
            if earlier.address == address:
                await self.remove(earlier, "the agent registered again")
        if len(self._agents) >= self._max_agents:
            raise TooManyAgentsError(
                f"the balancer has {len(self._agents)} agents, the most it takes (--max-agents)",
                retry_after_s=5.0,
            )
        agent = RegisteredAgent(
            agent_id=f"agent-{next(self._ids)}",
            name=name,
            address=address,
            pool=pool,
            # dns:/// so an address is never read as another scheme (unix:, vsock:).
            channel=self._dialer.aio_channel(f"dns:///{address}"),
            call_metadata=self._dialer.metadata,
        )
        self._agents[agent.agent_id] = agent
        log.info("agent registered", agent_id=agent.agent_id, name=name, address=address, pool=pool)
        self.changed()
        return agent

    def update(self, agent: RegisteredAgent, status: status_pb2.AgentStatus) -> None:
        """Apply a status snapshot."""
        agent.status.CopyFrom(status)
        agent.speed = AgentSpeed.of(status)
        agent.external_busy = max(status.slots_processing - agent.claims, 0)
        agent.last_status_at = time.monotonic()
        agent.reported = True
        self.prefixes.reported(agent, status.prefix_hashes)
        self.changed()

    async def remove(self, agent: RegisteredAgent, reason: str, *, abandon: bool = False) -> None:
        """Route nothing more to an agent and end its Connect stream.

        Streams already running on it go on (an agent that leaves drains them) and its channel
        closes when the last one ends; ``abandon`` (a silent agent) closes it now, failing them.
        """
        if self._agents.pop(agent.agent_id, None) is None:
            return
        log.warning("agent removed", agent_id=agent.agent_id, name=agent.name, reason=reason)
        agent.retired = True
        self.prefixes.forget(agent)
        self.changed()
        agent.outbox.put_nowait(None)
        if abandon or agent.claims == 0:
            await agent.channel.close()

    def released(self, agent: RegisteredAgent) -> None:
        """A stream on ``agent`` ended: close a removed agent's channel once none is left."""
        if agent.retired and agent.claims == 0:
            closing = asyncio.get_running_loop().create_task(agent.channel.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    def send_state(
        self,
        agent: RegisteredAgent,
        state: desired_state_pb2.VersionedDesiredState,
        *,
        rolling: bool,
    ) -> None:
        """Send a desired state down the agent's Connect stream."""
        agent.sent, agent.rolling = state, rolling
        agent.outbox.put_nowait(agent_registry_pb2.ConnectResponse(desired_state=state))

    def redial_if_rotated(self) -> None:
        """When the TLS files the balancer dials with changed (cert-manager renewed them), give
        every agent a channel made from the new ones; the old channels close once their calls
        had ``REDIAL_GRACE_S`` to finish."""
        if not self._dialer.tls_rotated():
            return
        log.info("TLS files changed: dialling agents anew", agents=len(self._agents))
        for agent in self.agents():
            old = agent.redial(self._dialer.aio_channel(f"dns:///{agent.address}"))
            closing = asyncio.get_running_loop().create_task(old.close(grace=REDIAL_GRACE_S))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def remove_stale(self, stale_after_s: float) -> None:
        """Remove every agent whose last snapshot is older than ``stale_after_s``."""
        now = time.monotonic()
        for agent in self.agents():
            age = now - agent.last_status_at
            if age > stale_after_s:
                await self.remove(agent, f"no status for {age:.1f} s", abandon=True)
