"""Hands out agent slots: at once when one is free, else in arrival order from a bounded buffer
(one per pool: a busy pool never delays another's requests)."""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from dataclasses import dataclass

import structlog

from paddler.balancer.agent_registry import AgentRegistry, RegisteredAgent
from paddler.balancer.model_routes import DEFAULT_ROUTE, Route
from paddler.balancer.routing_policy import PendingRequest, RoutingPolicy
from paddler.balancer.slot_policy import SlotPolicy, pick_agent
from paddler.balancer.slot_refusals import check_images, in_pool, wait_failed
from paddler.balancer.state_store import StateStore
from paddler.balancer.stream_claim import Demand, StreamClaim
from paddler.common.cancellation import being_cancelled
from paddler.common.errors import (
    DeadlineExceededError,
    ResourceExhaustedError,
)

log = structlog.get_logger(__name__)


@dataclass(eq=False)
class _Waiter:
    future: asyncio.Future[StreamClaim]
    request: PendingRequest


class SlotDispatcher:
    """Claims a slot for each request; a claim lasts until ``release``, however the call ends.

    Waiting requests are offered to the routing policy oldest first, so they get slots in the
    order they came unless the policy plans a later slot on a faster agent for one of them.
    Each pool has a buffer of its own (``capacity`` requests), planned over its own agents.
    """

    def __init__(
        self,
        registry: AgentRegistry,
        states: StateStore,
        capacity: int,
        timeout_s: float,
        policy: RoutingPolicy | None = None,
    ) -> None:
        self.capacity = capacity
        self._states = states
        self._timeout_s = timeout_s
        self._registry = registry
        self._policy: RoutingPolicy = policy or SlotPolicy()
        self._waiters: dict[str, collections.deque[_Waiter]] = {}
        self._rechecks: dict[str, asyncio.TimerHandle] = {}
        self._arrivals = itertools.count()
        registry.listen(self.dispatch)

    @property
    def buffered(self) -> int:
        """Requests waiting for a slot, in every pool."""
        return sum(self.buffered_in(pool) for pool in self._waiters)

    def buffered_in(self, pool: str) -> int:
        """Requests waiting for one of ``pool``'s slots."""
        return sum(1 for w in self._waiters.get(pool, ()) if not w.future.done())

    async def acquire(
        self,
        time_remaining_s: float | None,
        exclude: frozenset[str] = frozenset(),
        *,
        retry: bool = False,
        arrived_at: float | None = None,
        demand: Demand | None = None,
        route: Route = DEFAULT_ROUTE,
    ) -> StreamClaim:
        """Claim a slot of ``route``'s pool, waiting in its buffer if none is free. A retry
        goes to the front.

        ``arrived_at`` (monotonic; default now) starts the --buffered-request-timeout clock:
        a request's retries (an agent refused it, or was swapping models) share one wait.
        ``route.model`` ("": any) restricts the request to agents serving that model.
        """
        started = time.monotonic() if arrived_at is None else arrived_at
        buffer_left_s = started + self._timeout_s - time.monotonic()
        request = PendingRequest(
            demand or Demand(), exclude, next(self._arrivals), route.model, route.pool
        )
        check_images(request, self._registry, self._states)
        if buffer_left_s <= 0:
            raise wait_failed(request, self._registry, self._states, self._timeout_s)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), request)
        waiters = self._waiters.setdefault(route.pool, collections.deque())
        if retry:
            waiters.appendleft(waiter)
        else:
            waiters.append(waiter)
        self.dispatch(route.pool)
        if waiter.future.done():
            return waiter.future.result()
        if self.capacity == 0 or self.buffered_in(route.pool) > self.capacity:
            waiters.remove(waiter)
            waiter.future.cancel()
            # A policy may keep a request for a faster agent; with no room to wait, any free
            # slot beats a refusal.
            agent = pick_agent(self._registry.in_pool(route.pool), request, 0)
            if agent is not None:
                return self._claim(agent, waiter.request.demand)
            if self.capacity == 0:
                raise ResourceExhaustedError(
                    "no agent has a free slot and buffering is off (--max-buffered-requests 0)"
                )
            raise ResourceExhaustedError(
                f"no agent has a free slot and the buffer is full ({self.capacity} requests "
                f"waiting{in_pool(route.pool)}); retry later"
            )
        client_first = time_remaining_s is not None and time_remaining_s <= buffer_left_s
        wait_s = time_remaining_s if client_first else buffer_left_s
        try:
            claim = await asyncio.wait_for(waiter.future, wait_s)
        except BaseException as error:
            self._forget(waiter)
            if not isinstance(error, TimeoutError):
                raise
        else:
            if not being_cancelled():
                return claim
            self.release(claim)  # Python 3.11's wait_for can swallow a cancel: honour it
            raise asyncio.CancelledError
        if client_first:
            raise DeadlineExceededError(
                "the request's deadline passed while it waited for a free slot"
            )
        raise wait_failed(request, self._registry, self._states, self._timeout_s)

    def release(self, claim: StreamClaim) -> None:
        """Give a claimed slot back and serve the buffer (once: a later call does nothing)."""
        agent = claim.agent
        if claim not in agent.streams:
            return
        agent.streams.discard(claim)
        if claim.relayed and not agent.retired:  # its prompt is in the agent's cache now
            self._registry.prefixes.sent(agent, claim.demand.links)
        self._policy.finished(claim)
        self._registry.released(agent)
        self.dispatch(agent.pool)

    def cut_stuck_streams(self, agent_idle_s: float, client_idle_s: float) -> None:
        """Cancel every call to an agent that sent nothing for ``agent_idle_s`` (a hung agent
        that still reports: its relay resumes the request elsewhere), and cut every stream
        whose client took no message for ``client_idle_s`` (its slot is freed now)."""
        now = time.monotonic()
        for agent in self._registry.agents():
            for claim in list(agent.streams):
                call = claim.call
                if call is None:
                    continue
                if claim.sending_since is not None and now - claim.sending_since > client_idle_s:
                    claim.cut = True
                    log.warning(
                        "client stopped reading: stream cut",
                        request_id=claim.request_id,
                        agent=agent.name,
                        idle_s=client_idle_s,
                        relayed=claim.relayed,
                    )
                    call.cancel()
                    self.release(claim)
                elif claim.sending_since is None and now - claim.last_message_at > agent_idle_s:
                    claim.call = None
                    log.warning(
                        "agent call silent: cut",
                        request_id=claim.request_id,
                        agent=agent.name,
                        silent_s=round(now - claim.last_message_at, 1),
                        relayed=claim.relayed,
                    )
                    call.cancel()

    def serving(self, pool: str) -> int:
        """Agents of ``pool`` serving now."""
        return sum(1 for agent in self._registry.in_pool(pool) if agent.serving)

    def most_served_model(self, pool: str) -> str:
        """The model most of ``pool``'s serving agents have ("" while none serves)."""
        models = collections.Counter(
            a.status.model for a in self._registry.in_pool(pool) if a.serving
        )
        return min(models, key=lambda name: (-models[name], name), default="")

    def could_serve(self, exclude: frozenset[str], route: Route) -> bool:
        """Whether any agent of ``route``'s pool is left for the request once ``exclude`` is
        set aside (one not serving now may serve it when it is back)."""
        request = PendingRequest(exclude=exclude, pool=route.pool)
        return any(
            request.accepts(a)
            and (not route.model or not a.serving or a.status.model == route.model)
            for a in self._registry.in_pool(route.pool)
        )

    def dispatch(self, pool: str | None = None) -> None:
        """Give free slots to waiting requests as the routing policy plans them: in ``pool``,
        or in every pool (after a change to the agents)."""
        for name in [pool] if pool is not None else list(self._waiters):
            self._dispatch_pool(name)

    def _dispatch_pool(self, pool: str) -> None:
        waiters = self._waiters.get(pool)
        if waiters is None:
            return
        live = [waiter for waiter in waiters if not waiter.future.done()]
        if not live:
            del self._waiters[pool]  # a pool's buffer goes with its last waiter
            return
        if len(live) != len(waiters):
            waiters = self._waiters[pool] = collections.deque(live)
        plan = self._policy.plan([waiter.request for waiter in live], self._registry.in_pool(pool))
        for waiter, agent in zip(live, plan.grants, strict=True):
            if agent is not None:
                waiters.remove(waiter)
                waiter.future.set_result(self._claim(agent, waiter.request.demand))
        if plan.recheck_in_s is not None and pool not in self._rechecks:
            self._rechecks[pool] = asyncio.get_running_loop().call_later(
                plan.recheck_in_s, self._rechecked, pool
            )

    def _rechecked(self, pool: str) -> None:
        del self._rechecks[pool]
        self.dispatch(pool)

    def _claim(self, agent: RegisteredAgent, demand: Demand) -> StreamClaim:
        claim = StreamClaim(agent, demand)
        agent.streams.add(claim)
        return claim

    def _forget(self, waiter: _Waiter) -> None:
        """Drop a waiter that gave up; a slot it was handed at the last moment goes back."""
        pool = waiter.request.pool
        waiters = self._waiters.get(pool, collections.deque())
        if waiter in waiters:
            waiters.remove(waiter)
        future = waiter.future
        if future.done() and not future.cancelled():
            self.release(future.result())
        else:
            future.cancel()
            self.dispatch(pool)
