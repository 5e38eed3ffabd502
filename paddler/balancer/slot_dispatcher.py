"""Hands out agent slots: at once when one is free, else in arrival order from a bounded buffer."""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from dataclasses import dataclass

from paddler.balancer.agent_registry import AgentRegistry, RegisteredAgent
from paddler.balancer.router import pick_agent
from paddler.balancer.state_store import StateStore
from paddler.common.cancellation import being_cancelled
from paddler.common.errors import DeadlineExceededError, ResourceExhaustedError, UnavailableError


@dataclass(eq=False)
class _Waiter:
    future: asyncio.Future[RegisteredAgent]
    exclude: frozenset[str]


class SlotDispatcher:
    """Claims a slot for each request; a claim lasts until ``release``, however the call ends.

    Only the head of the FIFO is ever served, so requests get slots in the order they came.
    """

    def __init__(
        self, registry: AgentRegistry, states: StateStore, capacity: int, timeout_s: float
    ) -> None:
        self.capacity = capacity
        self._states = states
        self._timeout_s = timeout_s
        self._registry = registry
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._turns = itertools.count()
        registry.listen(self.dispatch)

    @property
    def buffered(self) -> int:
        """Requests waiting for a slot."""
        return sum(1 for w in self._waiters if not w.future.done())

    async def acquire(
        self,
        time_remaining_s: float | None,
        exclude: frozenset[str] = frozenset(),
        *,
        retry: bool = False,
        arrived_at: float | None = None,
    ) -> RegisteredAgent:
        """Claim a slot, waiting in the buffer if none is free. A retry goes to the front.

        ``arrived_at`` (monotonic; default now) starts the --buffered-request-timeout clock:
        a request's retries (an agent refused it, or was swapping models) share one wait.
        """
        started = time.monotonic() if arrived_at is None else arrived_at
        buffer_left_s = started + self._timeout_s - time.monotonic()
        if buffer_left_s <= 0:
            raise self._wait_failed()
        if retry or not self._waiters:
            agent = self._pick(exclude)
            if agent is not None:
                agent.claims += 1
                return agent
        if self.capacity == 0:
            raise ResourceExhaustedError(
                "no agent has a free slot and buffering is off (--max-buffered-requests 0)"
            )
        if self.buffered >= self.capacity:
            raise ResourceExhaustedError(
                f"no agent has a free slot and the buffer is full ({self.capacity} requests "
                "waiting); retry later"
            )
        waiter = _Waiter(asyncio.get_running_loop().create_future(), exclude)
        if retry:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        self.dispatch()
        client_first = time_remaining_s is not None and time_remaining_s <= buffer_left_s
        wait_s = time_remaining_s if client_first else buffer_left_s
        try:
            agent = await asyncio.wait_for(waiter.future, wait_s)
        except BaseException as error:
            self._forget(waiter)
            if not isinstance(error, TimeoutError):
                raise
        else:
            if not being_cancelled():
                return agent
            self.release(agent)  # Python 3.11's wait_for can swallow a cancel: honour it
            raise asyncio.CancelledError
        if client_first:
            raise DeadlineExceededError(
                "the request's deadline passed while it waited for a free slot"
            )
        raise self._wait_failed()

    def _wait_failed(self) -> UnavailableError:
        """Why a request's --buffered-request-timeout ran out."""
        desired = self._states.current
        agents = self._registry.agents()
        if desired.version and not any(a.serves(desired) for a in agents):
            issues = "; ".join(
                f"{a.name}: {', '.join(a.status.issues) or 'not applied yet'}" for a in agents
            )
            return UnavailableError(
                f"no agent serves desired state v{desired.version} after {self._timeout_s:g} s "
                f"({issues or 'no agents'})",
                reason="NO_AGENT_SERVES_DESIRED_STATE",
            )
        return UnavailableError(
            f"no slot freed within {self._timeout_s:g} s (--buffered-request-timeout); "
            "the cluster is saturated, retry later",
            reason="BUFFER_TIMEOUT",
        )

    def release(self, agent: RegisteredAgent) -> None:
        """Give a claimed slot back and serve the buffer."""
        agent.claims -= 1
        self._registry.released(agent)
        self.dispatch()

    def could_serve(self, exclude: frozenset[str]) -> bool:
        """Whether any registered agent is left once ``exclude`` is set aside."""
        return any(a.agent_id not in exclude for a in self._registry.agents())

    def dispatch(self) -> None:
        """Give free slots to waiting requests, oldest first.

        A waiter that excludes the agents with free slots (a retry) is passed over, so it
        holds up nobody behind it.
        """
        for waiter in list(self._waiters):
            if waiter.future.done():
                self._waiters.remove(waiter)
                continue
            agent = self._pick(waiter.exclude)
            if agent is None:
                if waiter.exclude:
                    continue
                return  # no free slot anywhere: nobody behind can have one either
            self._waiters.remove(waiter)
            agent.claims += 1
            waiter.future.set_result(agent)

    def _pick(self, exclude: frozenset[str]) -> RegisteredAgent | None:
        return pick_agent(self._registry.agents(), exclude, next(self._turns), self._states.current)

    def _forget(self, waiter: _Waiter) -> None:
        """Drop a waiter that gave up; a slot it was handed at the last moment goes back."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        future = waiter.future
        if future.done() and not future.cancelled():
            self.release(future.result())
        else:
            future.cancel()
            self.dispatch()
