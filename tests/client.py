"""Small synchronous gRPC client helpers for the tests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from paddler.v1 import agent_pb2, generation_pb2

# Greedy decoding counts on from here until the slot's context is full, whatever the machine's
# speed: a stream that holds its slot, decoding, until the test cancels it.
COUNTING_PROMPT = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"


@dataclass
class Reply:
    """Everything one Generate stream returned."""

    pieces: list[str]
    summary: generation_pb2.GenerationSummary

    @property
    def text(self) -> str:
        """The pieces joined."""
        return "".join(self.pieces)


def prompt_request(
    prompt: str,
    max_tokens: int | None = 24,
    temperature: float = 0.0,
    stop: tuple[str, ...] = (),
    **sampling: float,
) -> agent_pb2.GenerateRequest:
    """A raw-prompt request (greedy unless a temperature is given)."""
    parameters = generation_pb2.SamplingParameters(temperature=temperature)
    for name, value in sampling.items():
        setattr(parameters, name, value)
    return agent_pb2.GenerateRequest(
        input=generation_pb2.GenerationInput(
            prompt=prompt, max_tokens=max_tokens, sampling=parameters, stop=stop
        )
    )


def conversation_request(
    messages: list[tuple[str, str]], max_tokens: int = 24
) -> agent_pb2.GenerateRequest:
    """A greedy conversation request."""
    conversation = generation_pb2.Conversation(
        messages=[generation_pb2.ChatMessage(role=role, content=text) for role, text in messages]
    )
    return agent_pb2.GenerateRequest(
        input=generation_pb2.GenerationInput(
            conversation=conversation,
            max_tokens=max_tokens,
            sampling=generation_pb2.SamplingParameters(temperature=0.0),
        )
    )


def generate(stub: Any, request: Any, timeout: float = 120) -> Reply:
    """Run one Generate stream (an agent's or the balancer's) to its OK end."""
    pieces: list[str] = []
    summaries = []
    for response in stub.Generate(request, timeout=timeout):
        if response.HasField("summary"):
            summaries.append(response.summary)
        else:
            assert not summaries, "text after the summary"
            pieces.append(response.text)
    assert len(summaries) == 1, "a stream ends with exactly one summary"
    return Reply(pieces, summaries[0])


def rich_status(error: grpc.RpcError | grpc.Call) -> status_pb2.Status:
    """The google.rpc.Status carried in the error's trailing metadata."""
    assert isinstance(error, grpc.Call)
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            assert isinstance(value, bytes)
            return status_pb2.Status.FromString(value)
    raise AssertionError(f"no rich status on {error}")


def field_violations(error: grpc.RpcError | grpc.Call) -> list[str]:
    """Fields named by the BadRequest detail."""
    fields: list[str] = []
    for detail in rich_status(error).details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields.extend(v.field for v in bad.field_violations)
    return fields


def retry_delay_s(error: grpc.RpcError | grpc.Call) -> float:
    """The RetryInfo delay in seconds."""
    for detail in rich_status(error).details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return float(info.retry_delay.ToNanoseconds()) / 1e9
    raise AssertionError(f"no RetryInfo on {error}")


def generate_retrying(
    stub: Any,
    request: agent_pb2.GenerateRequest,
    budget_s: float = 120,
) -> tuple[Reply, int]:
    """Generate, retrying RESOURCE_EXHAUSTED after the server's RetryInfo delay.

    Returns the reply and how many times the agent said it was full.
    """
    deadline = time.monotonic() + budget_s
    refusals = 0
    while True:
        try:
            return generate(stub, request), refusals
        except grpc.RpcError as error:
            assert isinstance(error, grpc.Call)
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                raise
            refusals += 1
            time.sleep(retry_delay_s(error))


def invalid_field(stub: Any, request: Any) -> str:
    """Send a request that must fail with INVALID_ARGUMENT; return the one field it names."""
    try:
        generate(stub, request)
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        fields = field_violations(error)
        assert len(fields) == 1
        assert fields[0] in (error.details() or "")
        return fields[0]
    raise AssertionError("the request was served")


def error_of(stub: Any, request: Any, timeout: float = 120) -> grpc.Call:
    """Send a request that must fail; return the error."""
    try:
        generate(stub, request, timeout=timeout)
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        return error
    raise AssertionError("the request was served")


def error_reason(error: grpc.RpcError | grpc.Call) -> str:
    """The ErrorInfo reason."""
    for detail in rich_status(error).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    raise AssertionError(f"no ErrorInfo on {error}")
