"""OpenAI's ``usage`` and ``finish_reason``, and our ``paddler`` field, from our generation
summaries."""

from __future__ import annotations

from collections.abc import Sequence

from paddler.v1 import generation_pb2

_STOPPED = (
    generation_pb2.FINISH_REASON_END_OF_GENERATION,
    generation_pb2.FINISH_REASON_STOP_STRING,
)


def finish_reason(summary: generation_pb2.GenerationSummary) -> str:
    """``stop`` for an end of generation or a stop string; ``tool_calls`` for a call; ``length``
    for the token cap or a full context."""
    if summary.finish_reason == generation_pb2.FINISH_REASON_TOOL_CALLS:
        return "tool_calls"
    return "stop" if summary.finish_reason in _STOPPED else "length"


def served_by(summary: generation_pb2.GenerationSummary) -> dict[str, object]:
    """Paddler's extension on every finished choice: the agent that served it and its own time
    to first token (queueing on the agent and prefill, without the trip through the balancer)."""
    ttft_ms = summary.time_to_first_token.ToNanoseconds() / 1e6
    return {"agent": summary.agent_name, "time_to_first_token_ms": round(ttft_ms, 3)}


def usage(
    summaries: Sequence[generation_pb2.GenerationSummary], choices_per_prompt: int
) -> dict[str, object]:
    """Token counts of all choices, in choice order: each prompt counted once (its
    ``choices_per_prompt`` choices share it), completions added up."""
    prompts = summaries[::choices_per_prompt]
    prompt_tokens = sum(summary.usage.prompt_tokens for summary in prompts)
    completion = sum(summary.usage.completion_tokens for summary in summaries)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
        "prompt_tokens_details": {
            "cached_tokens": sum(summary.usage.cached_tokens for summary in prompts)
        },
        "completion_tokens_details": {
            "reasoning_tokens": sum(summary.usage.reasoning_tokens for summary in summaries)
        },
    }
