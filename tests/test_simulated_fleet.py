"""The simulated fleet (a fake engine, for scale benchmarks only) answers like a real agent.

A real agent and simulated agents join one real balancer; every check is made against both
kinds: registration and status, a stream through the balancer, and a direct client's refusal
and bad input.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import grpc

from paddler.v1 import agent_pb2, agent_pb2_grpc, generation_pb2, management_pb2
from tests.client import (
    COUNTING_PROMPT,
    error_of,
    error_reason,
    generate,
    invalid_field,
    prompt_request,
)
from tests.cluster import Cluster, cluster, to_inference
from tests.processes import ServerProcess

SIMULATED = 2
STORY = "Once upon a time, in a small village by the sea,"


def _both_kinds(agents: list[management_pb2.RegisteredAgent]) -> bool:
    return len(agents) == 1 + SIMULATED and all(a.ready and a.step_timings for a in agents)


@contextmanager
def _mixed_fleet() -> Iterator[tuple[Cluster, dict[str, str]]]:
    """A balancer with one real agent ("real", 1 slot) and simulated ones (1 slot each);
    yields the cluster and every agent's address by name."""
    with cluster(("real", 1)) as c, ExitStack() as stack:
        # Step timings: the real agent reports them once it has decoded.
        generate(c.inference, to_inference(prompt_request("Hello", max_tokens=2)))
        fleet = ServerProcess(
            "simulated-fleet",
            ["--balancer", c.balancer.management, "--agents", str(SIMULATED), "--slots", "1"],
            "simulated fleet listening",
            None,
        )
        stack.callback(fleet.stop)
        fleet.wait_logs("simulated fleet listening")
        agents = c.wait_for(_both_kinds)
        yield c, {agent.name: agent.address for agent in agents}


def test_simulated_agents_serve_through_the_balancer_like_a_real_one() -> None:
    with _mixed_fleet() as (c, addresses):
        assert set(addresses) == {"real", "sim-0", "sim-1"}
        # One endless stream per slot: every agent, real or simulated, gets one.
        holders = [c.inference.Generate(to_inference(prompt_request(COUNTING_PROMPT, 500)))]
        holders += [
            c.inference.Generate(to_inference(prompt_request(COUNTING_PROMPT, 500)))
            for _ in range(SIMULATED)
        ]
        for call in holders:
            assert next(call).HasField("text")
        busy = c.wait_for(lambda agents: all(a.slots_processing == 1 for a in agents))
        assert all(a.slots_claimed == 1 for a in busy)
        for name, address in addresses.items():
            with grpc.insecure_channel(address) as channel:
                stub = agent_pb2_grpc.AgentServiceStub(channel)
                status = stub.GetStatus(agent_pb2.GetStatusRequest()).status
                assert (status.name, status.slots_total, status.slots_processing) == (name, 1, 1)
                refused = error_of(stub, prompt_request("Hi", max_tokens=2))
                assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, name
                assert error_reason(refused) == "NO_FREE_SLOT", name
                bad = prompt_request("Hi", max_tokens=2)
                bad.input.sampling.top_p = 2
                assert invalid_field(stub, bad) == "input.sampling.top_p", name
                if name != "real":  # the fake engine refuses what it cannot honour
                    constrained = prompt_request("Hi", max_tokens=2)
                    constrained.input.grammar.gbnf = 'root ::= "a"'
                    assert invalid_field(stub, constrained) == "input.grammar", name
        for call in holders:
            call.cancel()
        c.wait_for(lambda agents: all(a.slots_processing == 0 for a in agents))
        replies = [
            generate(c.inference, to_inference(prompt_request(STORY, max_tokens=3)))
            for _ in range(6)
        ]
        by_agent = {reply.summary.agent_name: reply.summary for reply in replies}
        assert set(by_agent) <= set(addresses)
        for name, summary in by_agent.items():
            assert summary.usage.completion_tokens == 3, name
            assert summary.finish_reason == generation_pb2.FINISH_REASON_MAX_TOKENS, name
            assert summary.usage.prompt_tokens > 0 and summary.model, name
            assert summary.time_to_first_token.ToNanoseconds() > 0, name
