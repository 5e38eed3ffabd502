"""Send one prompt to an agent and stream the reply: ``example_client.py "prompt" [ADDRESS]``."""

from __future__ import annotations

import sys

import grpc

from paddler.v1 import agent_pb2, agent_pb2_grpc, generation_pb2


def main() -> None:
    """Stream the reply to stdout, then print the summary."""
    prompt = sys.argv[1] if len(sys.argv) > 1 else "Write a haiku about the sea."
    address = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1:50052"
    conversation = generation_pb2.Conversation(
        messages=[generation_pb2.ChatMessage(role="user", content=prompt)]
    )
    request = agent_pb2.GenerateRequest(
        input=generation_pb2.GenerationInput(conversation=conversation, max_tokens=256)
    )
    with grpc.insecure_channel(address) as channel:
        for response in agent_pb2_grpc.AgentServiceStub(channel).Generate(request):
            if response.HasField("text"):
                sys.stdout.write(response.text)
                sys.stdout.flush()
            else:
                sys.stdout.write(f"\n\n{response.summary}")


if __name__ == "__main__":
    main()
