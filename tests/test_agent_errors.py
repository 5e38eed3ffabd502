"""Every bad input gets INVALID_ARGUMENT naming the field; a full agent says RESOURCE_EXHAUSTED."""

from __future__ import annotations

import grpc
import pytest

from paddler.common.generation_input import MAX_INPUT_BYTES, MAX_STOP_STRINGS
from paddler.v1 import agent_pb2, agent_pb2_grpc, generation_pb2
from tests.bad_inputs import BAD_INPUTS
from tests.client import (
    COUNTING_PROMPT,
    error_of,
    generate,
    invalid_field,
    prompt_request,
    retry_delay_s,
)
from tests.processes import agent_stub


@pytest.mark.parametrize(("request_", "field"), BAD_INPUTS)
def test_bad_input_is_invalid_argument(
    stub4: agent_pb2_grpc.AgentServiceStub, request_: agent_pb2.GenerateRequest, field: str
) -> None:
    assert invalid_field(stub4, request_) == field


def test_a_prompt_longer_than_a_slot_says_the_limit(stub4: agent_pb2_grpc.AgentServiceStub) -> None:
    request = prompt_request("word " * 600)
    with pytest.raises(grpc.RpcError) as caught:
        generate(stub4, request)
    assert isinstance(caught.value, grpc.Call)
    assert "holds 512" in (caught.value.details() or "")


def test_all_slots_busy_is_resource_exhausted_with_retry_info() -> None:
    with agent_stub("--slots", "1", "--context-size", "512") as (_, stub):
        busy = stub.Generate(
            prompt_request(COUNTING_PROMPT, max_tokens=None), timeout=300
        )  # holds the slot until cancelled
        assert next(busy).HasField("text")
        with pytest.raises(grpc.RpcError) as caught:
            generate(stub, prompt_request("Hello"))
        error = caught.value
        assert isinstance(error, grpc.Call)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "all 1 slots" in (error.details() or "")
        assert retry_delay_s(error) > 0
        busy.cancel()


def test_unset_sampling_fields_take_the_defaults(stub4: agent_pb2_grpc.AgentServiceStub) -> None:
    request = agent_pb2.GenerateRequest(
        input=generation_pb2.GenerationInput(prompt="Hello", max_tokens=3)
    )
    assert generate(stub4, request).summary.usage.completion_tokens == 3


def test_each_input_limit_says_the_limit(stub4: agent_pb2_grpc.AgentServiceStub) -> None:
    huge = prompt_request("x" * (MAX_INPUT_BYTES + 1))
    assert f"the limit is {MAX_INPUT_BYTES} bytes" in (error_of(stub4, huge).details() or "")
    many_stops = prompt_request("Hi", stop=("a",) * (MAX_STOP_STRINGS + 1))
    assert f"the limit is {MAX_STOP_STRINGS}" in (error_of(stub4, many_stops).details() or "")
