"""Turns a GenerateRequest into a validated GenerationJob (prompt rendered and tokenized)."""

from __future__ import annotations

import uuid
from dataclasses import replace

import structlog

from paddler.agent.generation_job import GenerationJob
from paddler.agent.llama_model import LlamaModel
from paddler.agent.projector import MediaPrompt, Projector
from paddler.agent.reasoning_grammar import after_reasoning
from paddler.agent.reasoning_split import OPEN_TAG, Kind, ReasoningSplit, starts_in_reasoning
from paddler.agent.tool_prompt import ToolPrompt, generic_prompt, hermes_prompt, uses_hermes_calls
from paddler.agent.tool_reply import check_parameter_schemas
from paddler.common.chat_template import (
    CHATML,
    CHATML_END_OF_TURN,
    DEFAULT_RENDER_TIMEOUT_S,
    ChatTemplate,
)
from paddler.common.errors import ConfigurationError, InvalidArgumentError
from paddler.common.generation_input import SamplingSettings, check_generation_input
from paddler.common.prefix_chain import prefix_chain, reported_links
from paddler.v1 import agent_pb2, generation_pb2

log = structlog.get_logger(__name__)


class JobFactory:
    """Checks every field of a request against the model and the slot size."""

    def __init__(
        self,
        model: LlamaModel,
        context_per_slot: int,
        sampling_defaults: SamplingSettings,
        chat_template: str | None,
        template_timeout_s: float = DEFAULT_RENDER_TIMEOUT_S,
        *,
        projector: Projector | None = None,
    ) -> None:
        """``chat_template`` overrides the GGUF's own template when given; a model with
        neither chats in ChatML, as llama-server does."""
        self._model = model
        self._projector = projector
        self._context_per_slot = context_per_slot
        self._defaults = sampling_defaults
        source, self.template_name = chat_template, "override"
        if not source:
            source, self.template_name = model.chat_template, "gguf"
        if not source:
            source, self.template_name = CHATML, "chatml"
            log.info("no chat template in the model: using ChatML", model=model.name)
        self._template = ChatTemplate(source, model.bos_text, model.eos_text, template_timeout_s)
        # A template that writes <think> tags has a reasoning model behind it: its replies are
        # split unless a request says otherwise.
        self._thinks = OPEN_TAG in source
        self._prompt_of = hermes_prompt if uses_hermes_calls(source) else generic_prompt
        # ChatML's end of turn is plain text to a model that was not trained on it.
        self._turn_end = (CHATML_END_OF_TURN,) if self.template_name == "chatml" else ()

    def build(self, request: agent_pb2.GenerateRequest) -> GenerationJob:
        """Validate ``request``; raise InvalidArgumentError naming the field to fix.

        Blocking (renders and tokenizes up to MAX_INPUT_BYTES): run it off the event loop.
        """
        generation = request.input
        grammar = check_generation_input(generation)
        conversation = generation.WhichOneof("source") == "conversation"
        if conversation:
            check_parameter_schemas(generation.conversation)
        prompt = self._prompt_of(generation.conversation) if conversation else None
        text, media = self._prompt(generation, prompt)
        tokens = media.tokens
        if not tokens:
            raise InvalidArgumentError(
                "input", "the input renders to no tokens at all; send some text to continue"
            )
        if tokens[-1] < 0:  # an image's placeholder: nothing would be left to decode after it
            raise InvalidArgumentError(
                "input.conversation.messages",
                "the prompt ends with an image: the chat template must write text after it "
                "(its generation prompt)",
            )
        limit = self._context_per_slot
        if len(tokens) >= limit:
            raise InvalidArgumentError(
                "input",
                f"the prompt is {len(tokens)} tokens but a slot's context holds {limit} "
                f"(prompt plus generated tokens; /v1/models lists it as context_length): "
                f"shorten the prompt to under {limit} tokens, or give the agents more context "
                "with `paddler state set --context-size N` or the agent's --context-size "
                "(PADDLER_CONTEXT_SIZE)",
            )
        max_tokens = generation.max_tokens if generation.HasField("max_tokens") else limit
        if max_tokens > limit:
            raise InvalidArgumentError(
                "input.max_tokens",
                f"must be at most the slot's context size {limit}, got {max_tokens}; "
                "leave it unset to generate until the context is full",
            )
        trigger = None
        if prompt is not None and prompt.grammar is not None:  # the template's call syntax
            grammar, trigger = prompt.grammar, prompt.trigger
        reasoning = self._reasoning(generation, text)
        constraint = None
        if grammar is not None:
            # A schema (or the tools' reply) holds after the reasoning; a GBNF covers it all.
            opened = starts_in_reasoning(text)
            if reasoning is not None and trigger is None and opened is not False:
                grammar = after_reasoning(grammar, in_reasoning=bool(opened))
            kind = generation.grammar.WhichOneof("kind")
            field = f"input.grammar.{kind}" if kind else "input.conversation.tools"
            constraint = self._model.grammars.constraint(grammar, field, trigger)
        sampling = self._defaults.overridden_by(generation.sampling)
        job = GenerationJob(
            request_id=request.request_id or uuid.uuid4().hex,
            prompt_tokens=tokens,
            max_tokens=max_tokens,
            sampling=sampling,
            stop=(*generation.stop, *(self._turn_end if conversation else ())),
            grammar=constraint,
            tool_reply=prompt.reader if prompt is not None else None,
            reasoning=reasoning,
            images=media.images,
            prefixes=reported_links(prefix_chain(generation)),
        )
        if request.HasField("resumption"):
            self._resume(job, request.resumption)
        return job

    def _resume(self, job: GenerationJob, resumption: agent_pb2.Resumption) -> None:
        """Continue ``job`` after the tokens another agent generated: they join the prompt,
        advance the grammar and the seed, and their text not yet delivered is sent first."""
        generated = list(resumption.tokens)
        if job.tool_reply is not None:
            raise InvalidArgumentError(
                "resumption", "a request that may call tools cannot be resumed"
            )
        if any(not 0 <= token < self._model.n_vocab for token in generated):
            raise InvalidArgumentError("resumption.tokens", "a token is not in this vocabulary")
        if len(generated) >= job.max_tokens:
            raise InvalidArgumentError(
                "resumption.tokens", "the generation had no token left to generate"
            )
        pieces = [self._model.piece(token) for token in generated]
        if job.grammar is not None:
            for token, piece in zip(generated, pieces, strict=True):
                if not job.grammar.accept(token, piece):
                    raise InvalidArgumentError(
                        "resumption.tokens", "the tokens break the request's grammar"
                    )
        text = b"".join(pieces)
        if job.reasoning is not None:  # what was sent is the text the splitter let through
            text = _split_text(job.reasoning, text)
        delivered = resumption.delivered_text.encode()
        if not text.startswith(delivered):
            raise InvalidArgumentError(
                "resumption.delivered_text", "is not the start of the tokens' text"
            )
        if len(job.prompt_tokens) + len(generated) >= self._context_per_slot:
            raise InvalidArgumentError(
                "resumption.tokens", "the prompt and the tokens fill the slot's context"
            )
        job.prompt_tokens = [*job.prompt_tokens, *generated]
        job.max_tokens -= len(generated)
        job.resumed_tokens = len(generated)
        job.replay = text[len(delivered) :]
        if job.sampling.seed is not None:  # the draws the failed agent made are not repeated
            job.sampling = replace(job.sampling, seed=(job.sampling.seed + len(generated)) % 2**32)

    def _reasoning(
        self, generation: generation_pb2.GenerationInput, prompt: str
    ) -> ReasoningSplit | None:
        """The request's reasoning splitter, if its reply is split (ReasoningFormat)."""
        formats = generation_pb2.ReasoningFormat
        wanted = generation.reasoning_format
        if wanted == formats.REASONING_FORMAT_NONE:
            return None
        if wanted == formats.REASONING_FORMAT_UNSPECIFIED and not (
            self._thinks and generation.WhichOneof("source") == "conversation"
        ):
            return None
        return ReasoningSplit(starts_in_reasoning(prompt))

    def _prompt(
        self, generation: generation_pb2.GenerationInput, prompt: ToolPrompt | None
    ) -> tuple[str, MediaPrompt]:
        """The prompt's text, and its tokens with its images (libmtmd's) if it has any."""
        if prompt is None:
            return generation.prompt, MediaPrompt(self._model.tokenize(generation.prompt))
        options: dict[str, object] = {}
        if generation.HasField("enable_thinking"):
            options["enable_thinking"] = generation.enable_thinking
        if generation.reasoning_effort:
            options["reasoning_effort"] = generation.reasoning_effort
        text = self._template.render(prompt.messages, prompt.tools, options)
        if self._model.add_bos and text.startswith(self._model.bos_text):
            text = text[len(self._model.bos_text) :]
        images = [
            part.image
            for message in generation.conversation.messages
            for part in message.parts
            if part.HasField("image")
        ]
        if not images:
            return text, MediaPrompt(self._model.tokenize(text))
        if self._projector is None:
            raise ConfigurationError(
                f"the request has images but model {self._model.name} has no projector here: "
                "set the desired state's mmproj (paddler state set --mmproj SOURCE) or start "
                "the agents with --mmproj"
            )
        return text, self._projector.tokenize(text, images)


def _split_text(split: ReasoningSplit, text: bytes) -> bytes:
    """``text`` as the reply's text after ``split`` (which it advances): tags and the
    whitespace around them gone; a partial character at the end kept as bytes. A reply whose
    reasoning had begun is refused (its pieces cannot be sent again as they were)."""
    for cut in range(min(4, len(text)) + 1):
        try:
            whole, tail = text[: len(text) - cut].decode(), text[len(text) - cut :]
            break
        except UnicodeDecodeError:
            continue
    else:
        whole, tail = text.decode(errors="replace"), b""
    pieces = split.feed(whole)
    if any(kind is Kind.REASONING for kind, _ in pieces) or split.in_reasoning:
        raise InvalidArgumentError(
            "resumption", "the reply's reasoning had begun; a split reasoning is not resumed"
        )
    return "".join(piece for _, piece in pieces).encode() + tail
