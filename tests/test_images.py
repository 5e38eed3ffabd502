"""Images in conversations, end to end: real balancer and agent processes, the packaged
Gemma 3 270M with a multimodal projector the tests write (``tests/projector_file.py``: random
weights of the right shape, 4 image tokens per image). Gemma 3 270M has no vision of its own
and the projector's weights are random, so what the model says about an image is meaningless:
these tests check the wiring (limits, routing, the projector in the desired state, libmtmd in
the slot, the KV cache reused past an image), never answer quality."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import grpc
import openai
import pytest
from PIL import Image
from playwright.sync_api import expect

from paddler.common.image_input import MAX_IMAGE_BYTES, MAX_IMAGES
from paddler.v1 import agent_pb2, desired_state_pb2, generation_pb2
from tests.client import generate, invalid_field
from tests.cluster import Cluster, cluster, to_inference
from tests.local_http import serving
from tests.openai_clients import bad_request_param, client_of
from tests.panel_page import TIMEOUT_MS, panel_page
from tests.processes import run_paddler
from tests.projector_file import IMAGE_TOKENS, write_projector

GEMMA_WIDTH = 640
ASK = "What is in this picture?"


def png(width: int = 64, height: int = 48, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A small PNG of one colour."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def image_part(data: bytes, mime_type: str = "image/png") -> generation_pb2.ContentPart:
    return generation_pb2.ContentPart(image=generation_pb2.Image(data=data, mime_type=mime_type))


def text_part(text: str) -> generation_pb2.ContentPart:
    return generation_pb2.ContentPart(text=text)


def request_of(
    *messages: generation_pb2.ChatMessage, max_tokens: int = 6
) -> agent_pb2.GenerateRequest:
    return agent_pb2.GenerateRequest(
        input=generation_pb2.GenerationInput(
            conversation=generation_pb2.Conversation(messages=list(messages)),
            max_tokens=max_tokens,
            sampling=generation_pb2.SamplingParameters(temperature=0.0),
        )
    )


def asking(*parts: generation_pb2.ContentPart) -> generation_pb2.ChatMessage:
    return generation_pb2.ChatMessage(role="user", parts=list(parts))


@pytest.fixture(scope="module")
def seeing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A balancer and one agent: the packaged Gemma 3 with the test projector."""
    projector = tmp_path_factory.mktemp("projector") / "mmproj.gguf"
    write_projector(projector, GEMMA_WIDTH)
    with cluster(("solo", 2), balancer_args=("--allowed-image-host", "127.0.0.1")) as c:
        # Before any projector: a request with an image is refused at once, naming the state.
        error = _error(c, request_of(asking(text_part(ASK), image_part(png()))))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "mmproj" in (error.details() or "")
        state = desired_state_pb2.DesiredState(
            model=desired_state_pb2.ModelSource(packaged="gemma3-270m"),
            mmproj=desired_state_pb2.ModelSource(local_path=str(projector)),
        )
        c.wait_applied(c.set_state(state))
        c.wait_for(lambda agents: all(agent.images for agent in agents))
        yield c


def _error(c: Cluster, request: agent_pb2.GenerateRequest) -> grpc.Call:
    with pytest.raises(grpc.RpcError) as raised:
        generate(c.inference, to_inference(request))
    assert isinstance(raised.value, grpc.Call)
    return raised.value


def test_an_image_takes_its_positions_and_the_model_generates(seeing: Cluster) -> None:
    with_image = generate(seeing.inference, to_inference(request_of(asking(
        text_part(ASK), image_part(png())))))  # fmt: skip
    text_only = generate(seeing.inference, to_inference(request_of(asking(text_part(ASK)))))
    assert with_image.summary.usage.completion_tokens > 0
    # The image's 4 positions, and Gemma's <start_of_image> / <end_of_image> around them.
    extra = with_image.summary.usage.prompt_tokens - text_only.summary.usage.prompt_tokens
    assert extra >= IMAGE_TOKENS


def test_the_cache_is_reused_past_an_image_and_not_past_another(seeing: Cluster) -> None:
    first = asking(text_part(ASK), image_part(png(colour=(10, 200, 10))))
    reply = generate(seeing.inference, to_inference(request_of(first)))
    answer = generation_pb2.ChatMessage(role="assistant", content=reply.text)
    follow = generation_pb2.ChatMessage(role="user", content="And the colour?")
    again = generate(seeing.inference, to_inference(request_of(first, answer, follow)))
    # Everything up to the reply was in the slot, the image included.
    assert again.summary.usage.cached_tokens >= reply.summary.usage.prompt_tokens - 1
    other = asking(text_part(ASK), image_part(png(colour=(10, 10, 200))))
    changed = generate(seeing.inference, to_inference(request_of(other, answer, follow)))
    # A different image: only the text before it can be reused.
    assert changed.summary.usage.cached_tokens < reply.summary.usage.prompt_tokens - IMAGE_TOKENS


BAD = [
    (generation_pb2.ChatMessage(role="assistant", parts=[image_part(png())]), "parts[0].image"),
    (asking(image_part(png(), "image/gif")), "parts[0].image.mime_type"),
    (asking(image_part(png(), "image/jpeg")), "parts[0].image.mime_type"),
    (asking(image_part(b"not an image at all")), "parts[0].image.data"),
    (asking(image_part(b"")), "parts[0].image.data"),
    (asking(image_part(b"\x89PNG" + b"x" * MAX_IMAGE_BYTES)), "parts[0].image.data"),
    (asking(image_part(png(5000, 4000))), "parts[0].image.data"),
    (asking(*[image_part(png())] * (MAX_IMAGES + 1)), f"parts[{MAX_IMAGES}].image"),
    (asking(generation_pb2.ContentPart()), "parts[0]"),
    (
        generation_pb2.ChatMessage(role="user", content="hi", parts=[image_part(png())]),
        "messages[0].content",
    ),
]


@pytest.mark.parametrize(("message", "field"), BAD)
def test_bad_images_are_refused_naming_the_part(
    seeing: Cluster, message: generation_pb2.ChatMessage, field: str
) -> None:
    named = invalid_field(seeing.inference, to_inference(request_of(message)))
    assert named.endswith(field), named


def _data_uri(data: bytes, mime_type: str = "image/png") -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode()}"


def test_openai_chat_and_responses_take_data_uris(seeing: Cluster) -> None:
    with client_of(seeing) as client:
        reply = client.chat.completions.create(
            model="gemma-3-270m-q4_k_m",
            max_tokens=6,
            temperature=0,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": ASK},
                        {"type": "image_url", "image_url": {"url": _data_uri(png())}},
                    ],
                }
            ],
        )
        assert reply.usage is not None and reply.usage.completion_tokens > 0
        response = client.responses.create(
            model="gemma-3-270m-q4_k_m",
            max_output_tokens=16,
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": ASK},
                        {"type": "input_image", "image_url": _data_uri(png()), "detail": "auto"},
                    ],
                }
            ],
        )
        assert response.usage is not None and response.usage.output_tokens > 0


@pytest.mark.parametrize(
    ("url", "param"),
    [
        ("https://example.com/cat.png", "messages[0].content[1].image_url.url"),
        ("data:image/png;base64,@@@@", "messages[0].content[1].image_url.url"),
        ("data:image/gif;base64,R0lGOD==", "messages[0].content[1].image_url.url"),
        (_data_uri(b"not a png"), "messages[0].content[1].image_url"),
        (_data_uri(png(), "image/webp"), "messages[0].content[1].image_url"),
    ],
)
def test_openai_refuses_bad_image_urls_with_400(seeing: Cluster, url: str, param: str) -> None:
    body: dict[str, object] = {
        "model": "gemma-3-270m-q4_k_m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": ASK},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    }
    with client_of(seeing) as client:
        named = bad_request_param(client, "/chat/completions", body)
    assert named is not None and named.startswith(param), named


class _Pictures(BaseHTTPRequestHandler):
    """An image host: /red.png, a page that is not an image, and a redirect."""

    paths: ClassVar[list[str]] = []  # every GET, in order

    def do_GET(self) -> None:
        self.paths.append(self.path)
        if self.path == "/moved.png":
            self.send_response(302)
            self.send_header("Location", "/red.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body, kind = (
            (png(), "image/png") if self.path == "/red.png" else (b"<p>hi</p>", "text/html")
        )
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def _chat_with(url: str) -> dict[str, object]:
    return {
        "model": "gemma-3-270m-q4_k_m",
        "max_tokens": 4,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": ASK},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    }


def test_an_allowed_hosts_image_url_is_fetched_and_others_are_refused(seeing: Cluster) -> None:
    """The balancer runs with --allowed-image-host 127.0.0.1."""
    with serving(_Pictures) as site, client_of(seeing) as client:
        reply = client.post("/chat/completions", body=_chat_with(f"{site}/red.png"), cast_to=object)
        assert isinstance(reply, dict) and reply["usage"]["completion_tokens"] > 0
        for path, words in (("/page.html", "text/html"), ("/moved.png", "HTTP 302")):
            with pytest.raises(openai.BadRequestError) as raised:
                client.post("/chat/completions", body=_chat_with(f"{site}{path}"), cast_to=object)
            assert words in raised.value.message
            assert raised.value.param == "messages[0].content[1].image_url.url"
        # More image parts than a request may carry: refused before anything is fetched.
        fetched = len(_Pictures.paths)
        crowded = _chat_with(f"{site}/red.png")
        parts = [{"type": "image_url", "image_url": {"url": f"{site}/red.png"}}] * (MAX_IMAGES + 1)
        crowded["messages"] = [{"role": "user", "content": parts}]
        with pytest.raises(openai.BadRequestError) as raised:
            client.post("/chat/completions", body=crowded, cast_to=object)
        assert raised.value.param == f"messages[0].content[{MAX_IMAGES}].image_url.url"
        assert len(_Pictures.paths) == fetched
        other = site.replace("127.0.0.1", "localhost")  # the same server, not an allowed name
        with pytest.raises(openai.BadRequestError) as raised:
            client.post("/chat/completions", body=_chat_with(f"{other}/red.png"), cast_to=object)
        assert "--allowed-image-host" in raised.value.message


def test_an_openai_client_error_is_not_a_server_error(seeing: Cluster) -> None:
    """A remote URL is refused (not fetched) with the message saying what to send instead."""
    with client_of(seeing) as client, pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="gemma-3-270m-q4_k_m",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
                    ],
                }
            ],
        )
    assert "data: URI" in raised.value.message


def test_the_cli_shows_the_model_an_image(seeing: Cluster, tmp_path: Path) -> None:
    picture = tmp_path / "red.png"
    picture.write_bytes(png())
    address = seeing.balancer.inference
    chat = run_paddler(
        "chat", "--address", address, "--image", str(picture), "--max-tokens", "4",
        stdin=f"{ASK}\nAnd now?\n",
    )  # fmt: skip
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.count("model>") == 2
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    refused = run_paddler("generate", "--address", address, "--image", str(text), ASK)
    assert refused.returncode == 2
    assert "not a PNG, JPEG or WebP" in refused.stderr
    raw = run_paddler("generate", "--address", address, "--raw", "--image", str(picture), ASK)
    assert raw.returncode == 2


def test_the_playground_sends_an_image_and_shows_it(seeing: Cluster, tmp_path: Path) -> None:
    picture = tmp_path / "green.png"
    picture.write_bytes(png(colour=(20, 180, 20)))
    with panel_page(seeing.balancer.web) as (page, errors):
        # The state form shows the projector, and refuses a bad one naming it.
        expect(page.locator("#mmproj-kind")).to_have_value("localPath")
        expect(page.locator("#mmproj-value")).to_have_value(re.compile(r"/mmproj\.gguf$"))
        page.select_option("#mmproj-kind", "url")
        page.fill("#mmproj-value", "ftp://models.example/mmproj.gguf")
        page.click("#state-form button[type=submit]")
        expect(page.locator("#state-message")).to_have_class("error")
        expect(page.locator("#state-message")).to_contain_text("https://")
        assert seeing.desired_state().state.mmproj.local_path.endswith("mmproj.gguf")
        page.fill("#max-tokens", "4")
        page.set_input_files("#images", str(picture))
        page.fill("#prompt", ASK)
        page.click("#prompt-form button[type=submit]")
        summary = page.locator("#summary")
        expect(summary).to_have_class("ok", timeout=TIMEOUT_MS)
        expect(summary).to_contain_text("gemma-3-270m")
        shown = page.locator(".turn.user img.thumb")
        expect(shown).to_have_count(1)
        assert (shown.get_attribute("src") or "").startswith("data:image/png;base64,")
        # The next question goes with the conversation, the image still in its turn.
        page.fill("#prompt", "And its colour?")
        page.click("#prompt-form button[type=submit]")
        expect(page.locator(".turn.assistant")).to_have_count(2)
        expect(summary).to_have_class("ok", timeout=TIMEOUT_MS)
    assert errors == []


def test_a_micro_batch_smaller_than_an_image_is_refused_clearly(seeing: Cluster) -> None:
    """A micro-batch smaller than an image: Gemma 3's projector decodes an image with
    non-causal attention, so it must fit one (llama.cpp would abort the agent otherwise)."""
    before = seeing.desired_state().state
    message = asking(text_part(ASK), image_part(png()))
    try:
        small = desired_state_pb2.DesiredState()
        small.CopyFrom(before)
        small.placement.ubatch_size = 2
        seeing.wait_applied(seeing.set_state(small))
        error = _error(seeing, request_of(message))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
        assert "--ubatch-size" in (error.details() or "")
        # The agent lives on: a request without an image is served.
        assert generate(seeing.inference, to_inference(request_of(asking(text_part(ASK))))).text
    finally:
        seeing.wait_applied(seeing.set_state(before))
