"""Client side of InferenceService for the CLI: stream one reply to the terminal."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from paddler.cli.failure import exit_on_rpc_error
from paddler.v1 import generation_pb2, inference_pb2, inference_pb2_grpc

INFERENCE_ADDRESS_HELP = "Balancer inference address."
DEFAULT_INFERENCE_ADDRESS = "127.0.0.1:50051"


def stream_reply(
    stub: inference_pb2_grpc.InferenceServiceStub,
    generation: generation_pb2.GenerationInput,
    timeout_s: float,
    model: str = "",
) -> tuple[str, generation_pb2.GenerationSummary]:
    """Print the pieces as they come (the reasoning, if any, to stderr); return the whole text
    and the summary. ``model`` names the pool that serves it ("": "default")."""
    request = inference_pb2.InferenceServiceGenerateRequest(input=generation, model=model)
    pieces: list[str] = []
    summary = generation_pb2.GenerationSummary()
    with exit_on_rpc_error(prefix="\n"):
        for response in stub.Generate(request, timeout=timeout_s):
            if response.HasField("text"):
                pieces.append(response.text)
                sys.stdout.write(response.text)
                sys.stdout.flush()
            elif response.HasField("reasoning"):
                sys.stderr.write(response.reasoning)
                sys.stderr.flush()
            elif response.HasField("summary"):
                summary = response.summary
    sys.stdout.write("\n")
    return "".join(pieces), summary


RequestModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        envvar="PADDLER_REQUEST_MODEL",
        help="Which pool serves the request: a pool's name or alias, or a model its agents "
        "serve (paddler pools lists them); default: the pool 'default'.",
    ),
]


def describe(summary: generation_pb2.GenerationSummary) -> str:
    """One line about how the reply was served."""
    reason = generation_pb2.FinishReason.Name(summary.finish_reason).removeprefix("FINISH_REASON_")
    ttft_ms = summary.time_to_first_token.ToNanoseconds() / 1e6
    reasoning = summary.usage.reasoning_tokens
    thought = f" ({reasoning} reasoning)" if reasoning else ""
    return (
        f"[{summary.agent_name} · {summary.model} · {summary.usage.completion_tokens} tokens"
        f"{thought} · first token {ttft_ms:.0f} ms · {reason.lower()}]"
    )
