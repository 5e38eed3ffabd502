"""Prefix-aware routing through a real balancer and two real agents: a conversation's later
turns go back to the agent that holds its history (over gRPC and the OpenAI API), and a flood
of one conversation still spreads over both agents."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai.types.chat import ChatCompletionMessageParam

from paddler.v1 import generation_pb2, inference_pb2
from tests.client import generate
from tests.cluster import Cluster, cluster
from tests.openai_clients import MODEL, client_of, logged

SYSTEM = (
    "You are the help desk of a small public library. You answer questions about opening "
    "hours, borrowing rules, late fees, printing, study rooms and events. Keep answers short "
    "and friendly, and say so when you do not know something. "
) * 6


# A reply that cannot end before 2,000 digits and separators, so a stream given 1,000 tokens
# runs until it is cancelled, however fast the machine decodes.
ENDLESS = generation_pb2.Grammar(gbnf='root ::= [0-9, ]{2000,} "."')


def _request(
    messages: list[tuple[str, str]],
    request_id: str,
    max_tokens: int = 8,
    grammar: generation_pb2.Grammar | None = None,
) -> inference_pb2.InferenceServiceGenerateRequest:
    conversation = generation_pb2.Conversation(
        messages=[generation_pb2.ChatMessage(role=role, content=text) for role, text in messages]
    )
    return inference_pb2.InferenceServiceGenerateRequest(
        request_id=request_id,
        input=generation_pb2.GenerationInput(
            conversation=conversation,
            max_tokens=max_tokens,
            sampling=generation_pb2.SamplingParameters(temperature=0.0),
            grammar=grammar,
        ),
    )


@pytest.fixture(scope="module")
def pair() -> Iterator[Cluster]:
    with cluster() as c:
        for name in ("left", "right"):
            c.start_agent(name, "--slots", "2", "--context-size", "2048")
        yield c


def _served_by(c: Cluster, request_id: str) -> tuple[str, int]:
    """The agent that served ``request_id`` and the prompt tokens it had cached."""
    line = logged(c.balancer, "request served", request_id=request_id)
    return str(line["agent"]), int(str(line["cached_tokens"]))


def test_later_turns_go_back_to_the_agent_that_holds_the_conversation(pair: Cluster) -> None:
    messages = [("system", SYSTEM), ("user", "When do you open on Saturdays?")]
    reply = generate(pair.inference, _request(messages, "turn-1"))
    home, _ = _served_by(pair, "turn-1")
    for turn, question in enumerate(["And on Sundays?", "Can I print there?"], start=2):
        messages += [("assistant", reply.text), ("user", question)]
        reply = generate(pair.inference, _request(messages, f"turn-{turn}"))
        agent, cached = _served_by(pair, f"turn-{turn}")
        assert agent == home, f"turn {turn} went to {agent}, its history is on {home}"
        assert cached == reply.summary.usage.cached_tokens
        assert cached > reply.summary.usage.prompt_tokens // 2


def test_an_openai_conversation_goes_back_to_its_agent_and_reports_cached_tokens(
    pair: Cluster,
) -> None:
    history: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": SYSTEM.replace("library", "museum")},
        {"role": "user", "content": "Is there a cloakroom?"},
    ]
    agents = []
    with client_of(pair) as client:
        for turn in range(3):
            reply = client.chat.completions.create(
                model=MODEL,
                messages=history,
                max_tokens=8,
                temperature=0,
                extra_headers={"X-Request-Id": f"museum-{turn}"},
            )
            agents.append(_served_by(pair, f"museum-{turn}")[0])
            history += [
                {"role": "assistant", "content": reply.choices[0].message.content or ""},
                {"role": "user", "content": f"And question {turn + 2}: is it open late?"},
            ]
    assert len(set(agents)) == 1, agents
    usage = reply.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens
    assert usage.prompt_tokens_details.cached_tokens > usage.prompt_tokens // 2


def test_a_flood_of_one_conversation_spreads_over_both_agents(pair: Cluster) -> None:
    messages = [("system", SYSTEM), ("user", "Count from one to one hundred, please.")]
    generate(pair.inference, _request(messages, "flood-0"))  # its agent now holds the prefix
    flood = [_request(messages, f"flood-{n}", 1000, ENDLESS) for n in range(1, 5)]
    calls = [pair.inference.Generate(request, timeout=600) for request in flood]
    try:
        # Four streams that run until cancelled, on two agents of two slots: the holder's slots
        # fill, and however long the policy expects them to run, the other agent takes some of
        # the rest while they do (one conversation never makes the fleet one agent). Whether
        # the policy waits a while for the holder first depends on the speeds measured, so
        # the streams outlast any such wait.
        pair.wait_for(lambda agents: all(a.slots_claimed >= 1 for a in agents), timeout_s=300)
    finally:
        for call in calls:
            call.cancel()
    pair.wait_for(lambda agents: all(a.slots_claimed == 0 for a in agents))
