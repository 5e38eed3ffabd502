"""A generation's text events as GenerateResponse messages: reasoning split from the reply's
text, a tool call's text read aside, and the tokens each message covers listed with it."""

from __future__ import annotations

from paddler.agent.generation_job import GenerationJob
from paddler.agent.reasoning_split import Kind
from paddler.v1 import agent_pb2, generation_pb2


class ReplyMessages:
    """One per stream; ``of`` is on the per-token path."""

    def __init__(self, job: GenerationJob) -> None:
        self._generated = job.generated
        self._split = job.reasoning
        self._reply = job.tool_reply
        self._listed = 0  # tokens listed in messages so far
        self.reasoning_tokens = 0

    def of(self, text: str) -> list[agent_pb2.GenerateResponse]:
        """The messages a run of generated ``text`` completes (none while a tag or a tool
        call's text is held)."""
        if self._split is None:
            return self._text(text)
        return self._pieces(self._split.feed(text))

    def closing(self) -> list[agent_pb2.GenerateResponse]:
        """What was held when the generation ended, then the tool call, if the reply was one."""
        out = self._pieces(self._split.flush()) if self._split is not None else []
        if self._reply is None:
            return out
        if held := self._reply.flush():
            out.append(agent_pb2.GenerateResponse(text=held))
        if (call := self._reply.call()) is not None:
            out.append(agent_pb2.GenerateResponse(tool_call=call))
        return out

    def usage(self, usage: generation_pb2.Usage) -> None:
        """Count the reasoning tokens into ``usage``."""
        usage.reasoning_tokens = self.reasoning_tokens

    def _pieces(self, pieces: list[tuple[Kind, str]]) -> list[agent_pb2.GenerateResponse]:
        out: list[agent_pb2.GenerateResponse] = []
        for kind, piece in pieces:
            if kind is Kind.TEXT:
                out += self._text(piece)
                continue
            tokens = self._tokens()
            self.reasoning_tokens += len(tokens)
            out.append(agent_pb2.GenerateResponse(reasoning=piece, tokens=tokens))
        return out

    def _text(self, text: str) -> list[agent_pb2.GenerateResponse]:
        if self._reply is not None:
            text = self._reply.feed(text)
        if not text:
            return []
        return [agent_pb2.GenerateResponse(text=text, tokens=self._tokens())]

    def _tokens(self) -> list[int]:
        """The tokens sampled since the last message (the engine appends each before its
        text goes out, so they cover the text sent so far)."""
        count = len(self._generated)
        tokens = self._generated[self._listed : count]
        self._listed = count
        return tokens
