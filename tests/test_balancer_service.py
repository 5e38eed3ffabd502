"""The balancer as a service: bad input, health and reflection, and the SIGTERM drain."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from paddler.v1 import agent_pb2
from tests.bad_inputs import BAD_INPUTS
from tests.client import error_of, generate, invalid_field, prompt_request
from tests.cluster import Cluster, cluster, to_inference

STORY = "Once upon a time, in a small village by the sea, there lived an old fisherman who"


@pytest.fixture(scope="module")
def shared() -> Iterator[Cluster]:
    """One balancer with one 2-slot agent for the read-only tests here."""
    with cluster(("solo", 2)) as c:
        yield c


@pytest.mark.parametrize(("request_", "field"), BAD_INPUTS)
def test_bad_input_gets_the_agents_status_through_the_balancer(
    shared: Cluster, request_: agent_pb2.GenerateRequest, field: str
) -> None:
    assert invalid_field(shared.inference, to_inference(request_)) == field


def test_a_prompt_too_long_names_the_limit_through_the_balancer(shared: Cluster) -> None:
    error = error_of(shared.inference, to_inference(prompt_request("word " * 600)))
    assert "holds 512" in (error.details() or "")


def test_health_and_reflection_on_both_servers(shared: Cluster) -> None:
    servers = {
        shared.balancer.inference: "paddler.v1.InferenceService",
        shared.balancer.management: "paddler.v1.ManagementService",
    }
    for address, service in servers.items():
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", service):
                reply = health.Check(health_pb2.HealthCheckRequest(service=name))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            reply = next(iter(reflection.ServerReflectionInfo(iter([request]))))
            assert service in {s.name for s in reply.list_services_response.service}


def test_the_summary_names_the_agent_and_the_balancer_logs_one_line(shared: Cluster) -> None:
    served_before = len(shared.balancer.logs("request served"))
    reply = generate(shared.inference, to_inference(prompt_request(STORY, max_tokens=4)))
    assert (reply.summary.agent_name, reply.summary.usage.completion_tokens) == ("solo", 4)
    line = shared.balancer.wait_logs("request served", served_before + 1)[-1]
    assert (line["agent"], line["completion_tokens"], line["attempts"]) == ("solo", 4, 1)


def test_sigterm_drains_in_flight_streams_and_refuses_new_ones() -> None:
    with cluster(("solo", 2)) as c:
        stream = c.inference.Generate(
            to_inference(prompt_request(STORY, max_tokens=60)), timeout=300
        )
        assert next(stream).HasField("text")
        c.balancer.process.terminate()
        c.balancer.wait_logs("termination signal received")
        error = error_of(c.inference, to_inference(prompt_request(STORY, max_tokens=3)), 10)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        rest = list(stream)
        assert rest[-1].summary.usage.completion_tokens == 60
        # It exits by itself after the drain (a second SIGTERM during its last steps, as
        # stop() would send, finds the handlers gone and kills it).
        assert c.balancer.process.wait(timeout=60) == 0
