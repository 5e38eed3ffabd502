"""Streams that survive their agent: the balancer resumes a stream on another agent with the
tokens generated so far, so the client sees one stream (real agents, killed or stopped)."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import grpc

from paddler.v1 import generation_pb2, inference_pb2
from tests.client import COUNTING_PROMPT, error_reason, generate, prompt_request
from tests.cluster import Cluster, cluster, to_inference
from tests.openai_clients import client_of

PIECES_BEFORE_FAILURE = 8


def _serving(c: Cluster) -> str:
    """The agent the one running stream is on."""
    agents = c.wait_for(lambda agents: any(a.slots_claimed for a in agents))
    return next(a.name for a in agents if a.slots_claimed)


def _counting(max_tokens: int) -> inference_pb2.InferenceServiceGenerateRequest:
    return to_inference(prompt_request(COUNTING_PROMPT, max_tokens=max_tokens))


def _read(
    stream: Iterator[inference_pb2.InferenceServiceGenerateResponse], pieces: int
) -> list[str]:
    texts = []
    for response in stream:
        texts.append(response.text)
        if len(texts) == pieces:
            return texts
    raise AssertionError("the stream ended early")


def test_a_killed_agents_stream_goes_on_and_equals_an_unbroken_run() -> None:
    with cluster(("first", 1), ("second", 1)) as c:
        unbroken = generate(c.inference, _counting(60))
        stream = c.inference.Generate(_counting(60), timeout=300)
        texts = _read(stream, PIECES_BEFORE_FAILURE)
        doomed = _serving(c)
        c.agents[doomed].kill()
        rest = list(stream)
        summary = rest[-1].summary
        texts += [response.text for response in rest[:-1]]
    assert "".join(texts) == unbroken.text  # greedy: the same text, token for token
    assert list(summary.migrated_from) == [doomed]
    assert summary.agent_name != doomed
    assert summary.usage.completion_tokens == unbroken.summary.usage.completion_tokens
    assert summary.usage.prompt_tokens == unbroken.summary.usage.prompt_tokens
    assert summary.finish_reason == unbroken.summary.finish_reason


def test_a_stopped_agents_streams_complete_elsewhere_over_the_openai_api() -> None:
    args = ("--agent-stale-after", "2")
    with cluster(("first", 1), ("second", 1), balancer_args=args) as c, client_of(c) as client:
        unbroken = client.completions.create(
            model="SmolLM2-135M-Instruct.Q4_1", prompt=COUNTING_PROMPT, max_tokens=40, temperature=0
        )
        stream = client.completions.create(
            model="SmolLM2-135M-Instruct.Q4_1",
            prompt=COUNTING_PROMPT,
            max_tokens=40,
            temperature=0,
            stream=True,
        )
        chunks = iter(stream)
        texts = [next(chunks).choices[0].text for _ in range(PIECES_BEFORE_FAILURE)]
        hung = _serving(c)
        process = c.agents[hung].process
        process.send_signal(signal.SIGSTOP)  # a hung agent: alive, silent
        try:
            texts += [chunk.choices[0].text for chunk in chunks]
            removed = c.balancer.wait_logs("agent removed")
        finally:
            process.send_signal(signal.SIGCONT)
    assert "".join(texts) == unbroken.choices[0].text
    assert removed[0]["name"] == hung and "no status for" in str(removed[0]["reason"])
    assert c.balancer.logs("request migrated")[0]["agent"] == hung


def test_without_another_agent_the_stream_fails_with_its_cause() -> None:
    with cluster(("alone", 1)) as c:
        stream = c.inference.Generate(_counting(200), timeout=300)
        _read(stream, PIECES_BEFORE_FAILURE)
        c.agents["alone"].kill()
        try:
            list(stream)
        except grpc.RpcError as error:
            assert isinstance(error, grpc.Call)
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert "agent alone failed mid-stream" in (error.details() or "")
        else:
            raise AssertionError("the stream went on with no agent")


def test_a_call_that_goes_silent_is_cut_and_resumed_elsewhere() -> None:
    # The stopped agent is not judged stale (600 s): only the silent call's timeout acts.
    args = ("--agent-idle-timeout", "2", "--agent-stale-after", "600")
    with cluster(("first", 1), ("second", 1), balancer_args=args) as c:
        unbroken = generate(c.inference, _counting(40))
        stream = c.inference.Generate(_counting(40), timeout=300)
        texts = _read(stream, PIECES_BEFORE_FAILURE)
        hung = _serving(c)
        process = c.agents[hung].process
        process.send_signal(signal.SIGSTOP)
        try:
            rest = list(stream)
            cut = c.balancer.wait_logs("agent call silent: cut")[0]
            assert not c.balancer.logs("agent removed")  # the stopped agent was never judged
        finally:
            process.send_signal(signal.SIGCONT)
        texts += [response.text for response in rest[:-1]]
    assert "".join(texts) == unbroken.text
    assert cut["agent"] == hung
    assert list(rest[-1].summary.migrated_from) == [hung]


def _split(prompt: str, max_tokens: int) -> inference_pb2.InferenceServiceGenerateRequest:
    """A counting request whose reply is split into reasoning and text (<think> tags)."""
    request = to_inference(prompt_request(prompt, max_tokens=max_tokens))
    request.input.reasoning_format = generation_pb2.REASONING_FORMAT_THINK_TAGS
    return request


def test_a_split_stream_that_sent_only_text_resumes_as_text() -> None:
    with cluster(("first", 1), ("second", 1)) as c:
        unbroken = generate(c.inference, _split(COUNTING_PROMPT, 60))
        stream = c.inference.Generate(_split(COUNTING_PROMPT, 60), timeout=300)
        texts = _read(stream, PIECES_BEFORE_FAILURE)
        doomed = _serving(c)
        c.agents[doomed].kill()
        rest = list(stream)
    assert all(response.WhichOneof("event") in ("text", "summary") for response in rest)
    assert "".join(texts + [response.text for response in rest[:-1]]) == unbroken.text
    assert list(rest[-1].summary.migrated_from) == [doomed]


def test_a_stream_that_sent_reasoning_fails_instead_of_resuming() -> None:
    """The split of what was sent cannot be carried to another agent (as a tool call's
    reader cannot): the stream fails with its cause, as with no other agent."""
    with cluster(("first", 1), ("second", 1)) as c:
        # The prompt opens the reasoning: everything the model counts on is reasoning.
        stream = c.inference.Generate(_split(COUNTING_PROMPT + " <think>", 200), timeout=300)
        sent = []
        for response in stream:
            sent.append(response.WhichOneof("event"))
            if len(sent) == PIECES_BEFORE_FAILURE:
                break
        assert set(sent) == {"reasoning"}
        doomed = _serving(c)
        c.agents[doomed].kill()
        try:
            list(stream)
        except grpc.RpcError as error:
            assert isinstance(error, grpc.Call)
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert error_reason(error) == "AGENT_FAILED_MID_STREAM"
            assert f"agent {doomed} failed mid-stream" in (error.details() or "")
        else:
            raise AssertionError("a stream that sent reasoning was resumed")
