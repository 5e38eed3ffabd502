"""Agent failures: retries before the first piece, UNAVAILABLE mid-stream, no leaked slot."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from paddler.common.errors import (
    InternalError,
    PaddlerError,
    ResourceExhaustedError,
    UnavailableError,
)
from paddler.common.rpc_status import NOT_READY, to_grpc_status
from paddler.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    agent_registry_pb2,
    agent_registry_pb2_grpc,
    embedding_pb2,
    inference_pb2,
    status_pb2,
)
from tests.client import error_of, error_reason, generate, prompt_request, retry_delay_s
from tests.cluster import cluster, to_inference
from tests.processes import BalancerProcess, free_port

STORY = "Once upon a time, in a small village by the sea, there lived an old fisherman who"
SMOLLM = "SmolLM2-135M-Instruct.Q4_1"
GHOST_STATUS = status_pb2.AgentStatus(name="ghost", slots_total=4, model="m", ready=True)


class Registration:
    """A Connect stream opened by the test itself: an agent at ``address`` (by default one that
    nobody serves) that reports 4 free slots on ``model``."""

    def __init__(
        self,
        management: str,
        status_every_s: float | None,
        address: str | None = None,
        model: str = GHOST_STATUS.model,
    ) -> None:
        self._status = status_pb2.AgentStatus(name="ghost", slots_total=4, model=model, ready=True)
        self._stop = threading.Event()
        self._every = status_every_s
        self._address = address or f"127.0.0.1:{free_port()}"
        self._channel = grpc.insecure_channel(management)
        stub = agent_registry_pb2_grpc.AgentRegistryServiceStub(self._channel)
        self._responses = stub.Connect(self._messages())
        assert next(self._responses).HasField("accepted")

    def _messages(self) -> Iterator[agent_registry_pb2.ConnectRequest]:
        yield agent_registry_pb2.ConnectRequest(
            registration=agent_registry_pb2.AgentRegistration(name="ghost", address=self._address)
        )
        yield agent_registry_pb2.ConnectRequest(status=self._status)
        while not self._stop.wait(self._every or 3600):
            yield agent_registry_pb2.ConnectRequest(status=self._status)

    def close(self) -> None:
        """End the stream."""
        self._stop.set()
        self._channel.close()


class RefusingAgent(agent_pb2_grpc.AgentServiceServicer):
    """A stand-in AgentService (not a real agent) that refuses every generation with
    ``error``'s rich status, as an agent whose slots other clients keep taking, or one stuck
    swapping its model, would."""

    def __init__(self, error: PaddlerError) -> None:
        self._status = to_grpc_status(error)
        self.refusals = 0
        self.server = grpc.server(ThreadPoolExecutor(4))
        agent_pb2_grpc.add_AgentServiceServicer_to_server(self, self.server)
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def Generate(  # noqa: N802 - the gRPC method's name
        self, request: agent_pb2.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[agent_pb2.GenerateResponse]:
        """Refuse."""
        self.refusals += 1
        context.set_trailing_metadata(self._status.trailing_metadata)
        context.abort(self._status.code, self._status.details)
        yield agent_pb2.GenerateResponse()  # unreachable: abort raises

    def Embed(  # noqa: N802 - the gRPC method's name
        self, request: agent_pb2.EmbedRequest, context: grpc.ServicerContext
    ) -> agent_pb2.EmbedResponse:
        """Refuse."""
        self.refusals += 1
        context.set_trailing_metadata(self._status.trailing_metadata)
        context.abort(self._status.code, self._status.details)

    def GetStatus(  # noqa: N802
        self, request: agent_pb2.GetStatusRequest, context: grpc.ServicerContext
    ) -> agent_pb2.GetStatusResponse:
        """Four free slots, as the registration says."""
        return agent_pb2.GetStatusResponse(status=GHOST_STATUS)


@pytest.mark.parametrize(
    "refusal",
    [
        ResourceExhaustedError("all 4 slots of this agent are busy"),
        UnavailableError("the agent has no model loaded right now", reason=NOT_READY),
    ],
    ids=["resource-exhausted", "not-ready"],
)
def test_an_agent_that_keeps_refusing_costs_one_buffer_timeout_in_all(
    refusal: PaddlerError,
) -> None:
    with cluster(balancer_args=("--buffered-request-timeout", "2")) as c:
        refusing = RefusingAgent(refusal)
        ghost = Registration(c.balancer.management, 0.2, refusing.address)
        try:
            error = error_of(c.inference, to_inference(prompt_request(STORY)), timeout=120)
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
            assert error_reason(error) == "BUFFER_TIMEOUT"
            assert refusing.refusals >= 1
            assert c.buffered() == 0
        finally:
            ghost.close()
            refusing.server.stop(None)


def test_a_request_that_failed_with_internal_on_two_agents_is_not_sent_to_a_third() -> None:
    with cluster(balancer_args=("--max-attempts", "5")) as c:
        failing = [RefusingAgent(InternalError("engine step failed: boom")) for _ in range(3)]
        ghosts = [Registration(c.balancer.management, 0.2, agent.address) for agent in failing]
        try:
            c.wait_for(lambda agents: sum(1 for a in agents if a.ready) == 3)
            error = error_of(c.inference, to_inference(prompt_request(STORY)))
            assert error.code() == grpc.StatusCode.INTERNAL
            assert "engine step failed: boom" in (error.details() or "")
            assert sum(agent.refusals for agent in failing) == 2
            assert c.balancer.wait_logs("request failed on two agents: not tried on a third")
        finally:
            for ghost in ghosts:
                ghost.close()
            for agent in failing:
                agent.server.stop(None)


def test_an_unreachable_agent_is_unavailable_with_error_and_retry_info() -> None:
    with cluster(balancer_args=("--max-attempts", "1")) as c:
        ghost = Registration(c.balancer.management, 0.5)
        try:
            c.wait_for(lambda agents: [a.name for a in agents] == ["ghost"])
            error = error_of(c.inference, to_inference(prompt_request(STORY)))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert "agent ghost" in (error.details() or "")
            assert error_reason(error) == "AGENT_CALL_FAILED"
            assert retry_delay_s(error) > 0
        finally:
            ghost.close()


def test_a_request_whose_agent_fails_before_the_first_piece_is_retried() -> None:
    with cluster(("real", 1)) as c:
        ghost = Registration(c.balancer.management, status_every_s=0.5)
        try:
            # Both must have reported ready slots: the ghost's 4 free slots beat the real
            # agent's 1, so the request goes to the ghost first.
            c.wait_for(
                lambda agents: (
                    {(a.name, a.ready, a.slots_total) for a in agents}
                    == {("real", True, 1), ("ghost", True, 4)}
                )
            )
            reply = generate(c.inference, to_inference(prompt_request(STORY, max_tokens=4)))
            assert reply.summary.agent_name == "real"
            # The summary line comes after the retry's line: once it is read, both are.
            assert c.balancer.wait_logs("request served")[-1]["attempts"] == 2
            retried = c.balancer.logs("retrying on another agent")
            assert [r["agent"] for r in retried] == ["ghost"]
        finally:
            ghost.close()
        c.wait_for(lambda agents: [a.name for a in agents] == ["real"])


def test_embedding_parts_an_agent_fails_are_retried_on_another_in_order() -> None:
    with cluster(("real", 2)) as c:
        # The ghost claims the real agent's model: a batch's parts are served by one model.
        ghost = Registration(c.balancer.management, status_every_s=0.5, model=SMOLLM)
        try:
            c.wait_for(lambda agents: {(a.name, a.ready) for a in agents} == {
                ("real", True), ("ghost", True)
            })  # fmt: skip
            # Text i is i + 1 words long: the token counts show the order the vectors came in.
            texts = [" ".join(["sea"] * (i + 1)) for i in range(40)]
            embedding = embedding_pb2.EmbeddingInput(texts=texts)
            request = inference_pb2.InferenceServiceEmbedRequest(input=embedding)
            result = c.inference.Embed(request, timeout=120).result
            assert set(result.agent_names) == {"real"}
            tokens = [e.tokens for e in result.embeddings]
            assert len(tokens) == 40
            assert tokens == sorted(tokens) and len(set(tokens)) == 40
            retried = c.balancer.logs("retrying on another agent")
            assert retried and {r["agent"] for r in retried} == {"ghost"}
        finally:
            ghost.close()


def test_an_agent_stopped_with_sigterm_finishes_its_relayed_streams() -> None:
    with cluster(("leaving", 1)) as c:
        stream = c.inference.Generate(
            to_inference(prompt_request(STORY, max_tokens=60)), timeout=300
        )
        assert next(stream).HasField("text")
        c.agents["leaving"].process.terminate()
        c.wait_for(lambda agents: agents == [])  # no new requests go there
        rest = list(stream)
        assert rest[-1].summary.usage.completion_tokens == 60
        assert c.agents["leaving"].stop() == 0


def test_an_agent_that_stops_reporting_is_removed() -> None:
    with cluster(balancer_args=("--agent-stale-after", "2")) as c:
        silent = Registration(c.balancer.management, status_every_s=None)
        try:
            assert c.balancer.wait_logs("agent registered")[0]["name"] == "ghost"
            removed = c.balancer.wait_logs("agent removed")
            assert "no status for" in str(removed[0]["reason"])
            assert c.list_agents() == []
        finally:
            silent.close()


@pytest.mark.parametrize("migrate", [True, False])
def test_kill_9_under_load(migrate: bool) -> None:
    args = () if migrate else ("--no-migrate",)
    with cluster(("doomed", 2), ("survivor", 2), balancer_args=args) as c:
        request = to_inference(prompt_request(STORY, max_tokens=150))
        streaming = threading.Semaphore(0)
        # (agent that finished it, status, details, agents it left)
        outcomes: list[tuple[str, grpc.StatusCode, str, list[str]]] = []

        def send() -> None:
            pieces = 0
            try:
                for response in c.inference.Generate(request, timeout=120):
                    pieces += 1
                    if pieces == 1:
                        streaming.release()
                    summary = response.summary
            except grpc.RpcError as error:
                assert isinstance(error, grpc.Call)
                outcomes.append(("failed", error.code(), error.details() or "", []))
                return
            moved = list(summary.migrated_from)
            outcomes.append((summary.agent_name, grpc.StatusCode.OK, "", moved))

        with ThreadPoolExecutor(8) as pool:
            for _ in range(8):
                pool.submit(send)
            for _ in range(4):  # both agents stream to 4 clients, 4 requests wait
                assert streaming.acquire(timeout=60)
            c.wait_for(lambda _: c.buffered() == 4)
            c.agents["doomed"].kill()
        assert len(outcomes) == 8
        failed = [o for o in outcomes if o[0] == "failed"]
        moved = [o for o in outcomes if o[3]]
        if migrate:  # the two streams on the dead agent went on on the survivor
            assert failed == [], outcomes
            assert [o[3] for o in moved] == [["doomed"], ["doomed"]]
        else:
            assert len(failed) == 2 and moved == [], outcomes
        for _, code, details, _ in failed:
            assert code == grpc.StatusCode.UNAVAILABLE
            assert "agent doomed" in details
            assert "mid-stream" in details
        assert Counter(o[0] for o in outcomes if o[0] != "failed") == {
            "survivor": 8 if migrate else 6
        }
        agents = c.wait_for(lambda agents: [a.name for a in agents] == ["survivor"])
        assert agents[0].slots_claimed == 0
        c.wait_for(lambda agents: agents[0].slots_processing == 0)
        assert c.agent_slots_processing("survivor") == 0
        assert c.buffered() == 0


def test_agents_return_after_a_balancer_restart() -> None:
    management = f"127.0.0.1:{free_port()}"
    with cluster(("steady", 1), management=management) as c:
        assert c.balancer.stop() == 0
        restarted = BalancerProcess([], management=management)
        try:
            with grpc.insecure_channel(restarted.inference) as channel:
                c.balancer = restarted
                c.management = type(c.management)(grpc.insecure_channel(management))
                c.wait_for(lambda agents: [a.name for a in agents if a.ready] == ["steady"])
                inference = type(c.inference)(channel)
                reply = generate(inference, to_inference(prompt_request(STORY, max_tokens=3)))
                assert reply.summary.agent_name == "steady"
        finally:
            restarted.stop()
