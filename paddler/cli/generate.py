"""``paddler generate`` and ``paddler chat``: talk to the models behind a balancer."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated, Any

import typer
from PIL import Image as PILImage

from paddler.cli.options import ApiKeyFileOption, TlsCaOption, TlsServerNameOption, dialer
from paddler.cli.streaming import (
    DEFAULT_INFERENCE_ADDRESS,
    INFERENCE_ADDRESS_HELP,
    RequestModelOption,
    describe,
    stream_reply,
)
from paddler.common.image_input import FORMATS
from paddler.v1 import generation_pb2, inference_pb2_grpc

AddressOption = Annotated[
    str, typer.Option(envvar="PADDLER_INFERENCE_ADDRESS", help=INFERENCE_ADDRESS_HELP)
]
MaxTokensOption = Annotated[
    int, typer.Option(min=1, envvar="PADDLER_MAX_TOKENS", help="Most tokens to generate.")
]
TemperatureOption = Annotated[
    float | None,
    typer.Option(min=0, envvar="PADDLER_TEMPERATURE", help="0 is greedy; default: the agent's."),
]
TimeoutOption = Annotated[
    float, typer.Option(min=0.1, envvar="PADDLER_TIMEOUT", help="Seconds for each reply.")
]


ThinkingOption = Annotated[
    bool | None,
    typer.Option(
        "--thinking/--no-thinking",
        envvar="PADDLER_THINKING",
        help="Ask a reasoning model to think first or not (the chat template's enable_thinking); "
        "default: the template's. Reasoning goes to stderr.",
    ),
]


ImagesOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--image",
        exists=True,
        dir_okay=False,
        readable=True,
        envvar="PADDLER_IMAGE",
        help="A PNG, JPEG or WebP file to show the model with the (first) prompt; repeat for "
        "more. The model needs its projector (state set --mmproj).",
    ),
]


def _image(path: Path) -> generation_pb2.Image:
    """A file as an Image part, its type found in its bytes."""
    data = path.read_bytes()
    try:
        with PILImage.open(io.BytesIO(data)) as opened:
            found = opened.format
    except (OSError, ValueError):
        found = None
    types = {name: mime for mime, name in FORMATS.items()}
    if found not in types:
        raise typer.BadParameter(f"{path} is not a PNG, JPEG or WebP file", param_hint="--image")
    return generation_pb2.Image(data=data, mime_type=types[found])


def _grammar_file(envvar: str, help_text: str) -> Any:
    """A typer option naming a readable file."""
    return typer.Option(exists=True, dir_okay=False, readable=True, envvar=envvar, help=help_text)


def _input(
    max_tokens: int,
    temperature: float | None,
    thinking: bool | None,
    *,
    prompt: str = "",
    messages: list[tuple[str, str]] | None = None,
    images: list[generation_pb2.Image] | None = None,
) -> generation_pb2.GenerationInput:
    sampling = generation_pb2.SamplingParameters()
    if temperature is not None:
        sampling.temperature = temperature
    generation = generation_pb2.GenerationInput(max_tokens=max_tokens, sampling=sampling)
    if thinking is not None:
        generation.enable_thinking = thinking
    if messages is None:
        generation.prompt = prompt
    else:
        generation.conversation.messages.extend(
            generation_pb2.ChatMessage(role=role, content=text) for role, text in messages
        )
    first = next((m for m in generation.conversation.messages if m.role == "user"), None)
    if images and first is not None:  # the images go with the first question
        first.parts.append(generation_pb2.ContentPart(text=first.content))
        first.parts.extend(generation_pb2.ContentPart(image=image) for image in images)
        first.ClearField("content")
    return generation


def generate(
    prompt: Annotated[str, typer.Argument(help="What to ask.")],
    address: AddressOption = DEFAULT_INFERENCE_ADDRESS,
    raw: Annotated[
        bool,
        typer.Option(envvar="PADDLER_RAW", help="Send the prompt as raw text, no chat template."),
    ] = False,
    max_tokens: MaxTokensOption = 256,
    temperature: TemperatureOption = None,
    json_schema: Annotated[
        Path | None,
        _grammar_file(
            "PADDLER_JSON_SCHEMA",
            "A JSON schema file: the reply is one JSON value that validates against it.",
        ),
    ] = None,
    grammar: Annotated[
        Path | None,
        _grammar_file(
            "PADDLER_GRAMMAR",
            "A GBNF grammar file (llama.cpp's format, start rule `root`) the reply matches.",
        ),
    ] = None,
    thinking: ThinkingOption = None,
    image: ImagesOption = None,
    model: RequestModelOption = "",
    timeout: TimeoutOption = 120.0,
    api_key_file: ApiKeyFileOption = None,
    tls_ca: TlsCaOption = None,
    tls_server_name: TlsServerNameOption = "",
) -> None:
    """Stream one reply to stdout (the prompt is a user message unless --raw)."""
    if json_schema is not None and grammar is not None:
        raise typer.BadParameter("give --json-schema or --grammar, not both")
    if raw and (thinking is not None or image):
        raise typer.BadParameter(
            "--thinking/--no-thinking and --image need the chat template: drop --raw"
        )
    messages = None if raw else [("user", prompt)]
    images = [_image(path) for path in image or ()]
    generation = _input(
        max_tokens, temperature, thinking, prompt=prompt, messages=messages, images=images
    )
    if json_schema is not None:
        generation.grammar.json_schema = json_schema.read_text()
    if grammar is not None:
        generation.grammar.gbnf = grammar.read_text()
    with dialer(tls_ca, tls_server_name, api_key_file).channel(address) as channel:
        _, summary = stream_reply(
            inference_pb2_grpc.InferenceServiceStub(channel), generation, timeout, model
        )
    typer.echo(describe(summary), err=True)


def chat(
    address: AddressOption = DEFAULT_INFERENCE_ADDRESS,
    system: Annotated[
        str, typer.Option(envvar="PADDLER_SYSTEM", help="System message (empty: the model's).")
    ] = "",
    max_tokens: MaxTokensOption = 256,
    temperature: TemperatureOption = None,
    thinking: ThinkingOption = None,
    image: ImagesOption = None,
    model: RequestModelOption = "",
    timeout: TimeoutOption = 120.0,
    api_key_file: ApiKeyFileOption = None,
    tls_ca: TlsCaOption = None,
    tls_server_name: TlsServerNameOption = "",
) -> None:
    """Multi-turn chat from the terminal; an empty line or end of input quits."""
    history: list[tuple[str, str]] = [("system", system)] if system else []
    images = [_image(path) for path in image or ()]
    with dialer(tls_ca, tls_server_name, api_key_file).channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        while True:
            try:
                line = input("you> ").strip()
            except EOFError:
                break
            if not line:
                break
            history.append(("user", line))
            typer.echo("model> ", nl=False)
            reply, _ = stream_reply(
                stub,
                _input(max_tokens, temperature, thinking, messages=history, images=images),
                timeout,
                model,
            )
            history.append(("assistant", reply))
