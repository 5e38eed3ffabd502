"""Clients that stop reading their stream are cut after --client-idle-timeout and their agent
slot freed at once, while other streams on the same agent go on (real processes).

The cut is the relay's, whatever API the stream goes out by; over HTTP the kernel's and
uvicorn's buffers take some 100 KB before a send blocks, which a CPU-speed test cannot fill in
reasonable time, so the test reads over gRPC with a small flow-control window."""

from __future__ import annotations

import threading

import grpc

from paddler.v1 import inference_pb2_grpc
from tests.client import COUNTING_PROMPT, generate, prompt_request
from tests.cluster import cluster, to_inference

IDLE_S = "3"
STORY = "Once upon a time, in a small village by the sea, there lived an old fisherman who"
# A client whose HTTP/2 flow-control window stays small until it reads: the balancer's sends
# block as soon as it stops.
SMALL_WINDOW = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]


SLOW = ("--client-idle-timeout", IDLE_S)


def test_a_grpc_client_that_stops_reading_is_cut_and_its_neighbour_goes_on() -> None:
    with cluster(balancer_args=SLOW) as c:
        agent = c.start_agent("solo", "--slots", "2", "--context-size", "2048")
        with grpc.insecure_channel(c.balancer.inference, options=SMALL_WINDOW) as channel:
            slow = inference_pb2_grpc.InferenceServiceStub(channel).Generate(
                to_inference(prompt_request(COUNTING_PROMPT, max_tokens=1500)), timeout=300
            )
            assert next(slow).HasField("text")
            neighbour: list[str] = []
            reader = threading.Thread(
                target=lambda: neighbour.append(
                    generate(c.inference, to_inference(prompt_request(STORY, max_tokens=60))).text
                )
            )
            reader.start()  # a client that reads, on the agent's other slot
            cut = c.balancer.wait_logs("client stopped reading: stream cut")[0]
            # The agent's slot is freed at once (the neighbour may still hold the other).
            assert agent.wait_logs("request ended")[0]["outcome"] == "cancelled"
            reader.join(120)
            assert neighbour and neighbour[0]
            c.wait_for(lambda agents: agents[0].slots_processing == 0)
            try:
                for _ in slow:
                    pass
            except grpc.RpcError as error:
                assert isinstance(error, grpc.Call)
                assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert "--client-idle-timeout" in (error.details() or "")
            else:
                raise AssertionError("the cut stream ended well")
    assert cut["idle_s"] == float(IDLE_S)
