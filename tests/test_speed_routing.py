"""Speed-aware routing (``--routing speed``) through a real balancer to a fast and a slow agent.

The fast agent serves SmolLM2 135M, the slow one Gemma 3 270M (twice the weights and a vocabulary
eight times larger: slower per token on any machine), two slots each, one thread each.
"""

from __future__ import annotations

import collections
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc

from paddler.agent.model_source import resolve_model
from paddler.agent.state_report import StateReport
from paddler.v1 import agent_pb2_grpc, desired_state_pb2, inference_pb2, management_pb2
from tests.client import generate, prompt_request
from tests.cluster import Cluster, cluster, to_inference

PROMPTS = [
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "The history of the printing press begins in the fifteenth century, when",
    "Chapter 1. The train left the station at midnight, and the only passenger",
]
REQUESTS_PER_CLIENT = 5


def _story(index: int, max_tokens: int) -> inference_pb2.InferenceServiceGenerateRequest:
    return to_inference(prompt_request(PROMPTS[index % len(PROMPTS)], max_tokens=max_tokens))


def _timed(agents: list[management_pb2.RegisteredAgent]) -> bool:
    return len(agents) == 2 and all(agent.step_timings for agent in agents)


def _served(c: Cluster, clients: int) -> collections.Counter[str]:
    """Which agent served each of ``clients`` x REQUESTS_PER_CLIENT requests, sent back to back
    by each client."""
    served: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def client(index: int) -> None:
        for turn in range(REQUESTS_PER_CLIENT):
            reply = generate(c.inference, _story(index + turn, 24), timeout=300)
            with lock:
                served[reply.summary.agent_name] += 1

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    assert sum(served.values()) == clients * REQUESTS_PER_CLIENT
    return served


def test_the_fast_agent_serves_more_and_the_slow_one_still_serves_under_load() -> None:
    gemma = resolve_model(desired_state_pb2.ModelSource(packaged="gemma3-270m"), StateReport())
    with cluster(balancer_args=("--routing", "speed")) as c:
        c.start_agent("fast", "--slots", "2", "--context-size", "512")
        c.start_agent("slow", "--slots", "2", "--context-size", "512", "--model", str(gemma))
        # Until both agents have reported step timings the slot policy decides: warm each
        # up alone, straight to it, so its timings of one stream are its own.
        for name in ("fast", "slow"):
            with grpc.insecure_channel(c.agents[name].address) as channel:
                generate(agent_pb2_grpc.AgentServiceStub(channel), prompt_request(PROMPTS[0], 32))
        c.wait_for(_timed)
        # One at a time: an idle fast agent always beats an idle slow one (slot counting
        # takes turns between the two idle agents and sends the slow one half).
        alone = _served(c, 1)
        speeds = {
            a.name: [(t.streams, round(t.step_seconds, 4)) for t in a.step_timings]
            for a in c.list_agents()
        }
        assert alone == {"fast": REQUESTS_PER_CLIENT}, (alone, speeds)
        # Six at a time, more than the fleet's slots: the slow agent's free slot is sooner
        # than a place in the fast agent's queue.
        heavy = _served(c, 6)
        assert heavy["fast"] > heavy["slow"] > 0, heavy
        c.wait_for(lambda agents: all(a.slots_claimed == 0 for a in agents))
        assert c.buffered() == 0
