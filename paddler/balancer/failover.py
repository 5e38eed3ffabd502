"""One request's attempts across agents: an agent's failure as the client should see it, and
which failures wait for the same agent, which move on to another, and which end the request."""

from __future__ import annotations

import asyncio
import time

import grpc
import structlog
from grpc import aio

from paddler.balancer.agent_registry import RegisteredAgent
from paddler.balancer.metrics import BalancerMetrics
from paddler.balancer.model_routes import DEFAULT_ROUTE, Route
from paddler.balancer.slot_dispatcher import SlotDispatcher
from paddler.common.cancellation import being_cancelled
from paddler.common.errors import AgentCallError, PaddlerError, RelayedError, UnavailableError
from paddler.common.rpc_status import (
    INVALID_TOOL_CALL,
    NOT_READY,
    STATUS_DETAILS_KEY,
    error_reason,
)

log = structlog.get_logger(__name__)

_RELAYED_TRAILERS = (STATUS_DETAILS_KEY,)
# Failures that say nothing about the request itself: another agent may well serve it.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)


# A request that failed with INTERNAL on this many agents is not sent to another: it is more
# likely to break the next agent's batch too (a poison request) than to be served there.
POISON_AFTER = 2


def agent_failure(
    agent: RegisteredAgent, error: aio.AioRpcError | aio.UsageError | asyncio.CancelledError
) -> PaddlerError:
    """The agent's error as the client should see it.

    An error with the agent's own rich status is relayed unchanged. Anything else is gRPC's
    own failure of the call (no connection, a reset, a closed channel) and gets a status of
    ours, with ErrorInfo and RetryInfo like every other. A call cancelled while this task is not
    being cancelled, or refused by a closed channel, means the registry gave the agent up (it
    went silent); a cancelled task means the client went away.
    """
    # Clients see the agent's name (summaries carry it too), never its address or the
    # transport's own words about it; the balancer's log has both.
    where = f"agent {agent.name}"
    if isinstance(error, asyncio.CancelledError) and being_cancelled():
        raise error
    if isinstance(error, aio.UsageError | asyncio.CancelledError):
        return UnavailableError(f"{where} left the cluster", reason="AGENT_LEFT")
    trailers = tuple(
        (key, value)
        for key, value in error.trailing_metadata() or ()
        if key in _RELAYED_TRAILERS and isinstance(value, bytes)
    )
    reason = error_reason(trailers)
    if error.code() == grpc.StatusCode.UNAUTHENTICATED:
        # The agent refused this balancer's agent token: an operator's problem, not the
        # client's credential. Another agent may take it.
        log.error(
            "agent refused the balancer's agent token",
            agent=agent.name,
            address=agent.address,
            reason=reason,
        )
        return UnavailableError(
            f"{where} refused this balancer (its agent token); an operator must fix it",
            reason="AGENT_REFUSED_BALANCER",
        )
    if reason:
        return RelayedError(error.code(), error.details() or "", trailers, reason)
    log.warning(
        "agent call failed",
        agent=agent.name,
        address=agent.address,
        code=error.code().name,
        details=error.details(),
    )
    return AgentCallError(error.code(), f"the call to {where} failed ({error.code().name})")


def remaining(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (monotonic); None without one."""
    return None if deadline is None else deadline - time.monotonic()


class Failover:
    """The agents a request has given up on, and how many failed it."""

    def __init__(
        self,
        dispatcher: SlotDispatcher,
        max_attempts: int,
        request_id: str,
        metrics: BalancerMetrics,
        route: Route = DEFAULT_ROUTE,
    ) -> None:
        self._dispatcher = dispatcher
        self._route = route
        self._retries = metrics.retries
        self._max_attempts = max_attempts
        self._request_id = request_id
        self._failures = 0
        self._internal_failures = 0
        self.excluded: set[str] = set()

    def after(self, agent: RegisteredAgent, failure: PaddlerError) -> None:
        """Return when the request should ask for a slot again; raise ``failure`` when not.

        An agent swapping its model is waited for (its next status says when it is back); one
        whose slots others took is tried again; any other agent is excluded and another tried,
        up to the attempts allowed.
        """
        if failure.reason == NOT_READY:
            agent.status.ready = False
            self._retries.labels("not_ready").inc()
            return
        if failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            agent.external_busy += 1  # others took the slot; its next status says more
            self._retries.labels("busy").inc()
            return
        self._failures += 1
        self.excluded.add(agent.agent_id)
        if failure.code == grpc.StatusCode.INTERNAL:
            self._internal_failures += 1
        if self._internal_failures == POISON_AFTER:
            log.warning(
                "request failed on two agents: not tried on a third",
                request_id=self._request_id,
                code=failure.code.name,
            )
            raise failure from None
        if (
            failure.code not in RETRYABLE
            or failure.reason == INVALID_TOOL_CALL
            or self._failures == self._max_attempts
            or not self._dispatcher.could_serve(frozenset(self.excluded), self._route)
        ):
            raise failure from None
        self._retries.labels("agent_failed").inc()
        log.info(
            "retrying on another agent",
            request_id=self._request_id,
            agent=agent.name,
            code=failure.code.name,
        )
