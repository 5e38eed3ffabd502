"""One request's attempts across agents: which failures wait for the same agent, which move on
to another, and which end the request."""

from __future__ import annotations

import grpc
import structlog

from paddler.balancer.agent_registry import RegisteredAgent
from paddler.balancer.slot_dispatcher import SlotDispatcher
from paddler.common.errors import PaddlerError
from paddler.common.rpc_status import NOT_READY

log = structlog.get_logger(__name__)

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


class Failover:
    """The agents a request has given up on, and how many failed it."""

    def __init__(self, dispatcher: SlotDispatcher, max_attempts: int, request_id: str) -> None:
        self._dispatcher = dispatcher
        self._max_attempts = max_attempts
        self._request_id = request_id
        self._failures = 0
        self.excluded: set[str] = set()

    def after(self, agent: RegisteredAgent, failure: PaddlerError) -> None:
        """Return when the request should ask for a slot again; raise ``failure`` when not.

        An agent swapping its model is waited for (its next status says when it is back); one
        whose slots others took is tried again; any other agent is excluded and another tried,
        up to the attempts allowed.
        """
        if failure.reason == NOT_READY:
            agent.status.ready = False
            return
        if failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            agent.external_busy += 1  # others took the slot; its next status says more
            return
        self._failures += 1
        self.excluded.add(agent.agent_id)
        if (
            failure.code not in RETRYABLE
            or self._failures == self._max_attempts
            or not self._dispatcher.could_serve(frozenset(self.excluded))
        ):
            raise failure
        log.info(
            "retrying on another agent",
            request_id=self._request_id,
            agent=agent.name,
            code=failure.code.name,
        )
