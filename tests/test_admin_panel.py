"""The admin panel in a real browser (Debian's chromium, driven headless by Playwright): the
throughput chart is a flat line at 0 from the start and moves under load, the agent's busy bar
rises and falls under load, the desired state is refused with the balancer's message and then
applied from the form, and the playground streams a reply with its summary. Screenshots go to
the test's own folder; no page logs an error."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from paddler.v1 import desired_state_pb2
from tests.client import COUNTING_PROMPT, prompt_request
from tests.cluster import Cluster, cluster, to_inference

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 60_000
# Every wait of the page and of expect(): a busy machine makes the test slower, never red.
expect.set_options(timeout=TIMEOUT_MS)
# The chart's line (an SVG polyline, viewBox 600 x 80) with every point at 0 (y = 76).
FLAT_AT_ZERO = re.compile(r"^(\d+\.\d,76\.0 )+\d+\.\d,76\.0$")
ABOVE_ZERO = re.compile(r"^(?!0$)\d+(\.\d+)?$")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def panel(browser: Browser) -> Iterator[tuple[Cluster, Page, list[str]]]:
    """A cluster with one agent, and the panel open on it; yields the console's errors too."""
    with cluster(("solo", 2)) as c:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []

        def on_console(message: ConsoleMessage) -> None:
            # The browser logs every non-2xx response; the one 400 the test provokes on
            # purpose (a refused desired state) is the API working, not the page failing.
            url = message.location.get("url", "")
            provoked = url.endswith(("/api/state", "/api/generate")) and (
                "status of 400" in message.text
            )
            if message.type == "error" and not provoked:
                errors.append(f"{message.text} ({message.location.get('url')})")

        page.on("console", on_console)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(c.balancer.web)
        yield c, page, errors
        page.close()


def test_the_panel_shows_load_edits_the_state_and_streams_a_prompt(
    panel: tuple[Cluster, Page, list[str]], tmp_path: Path
) -> None:
    c, page, errors = panel
    row = page.locator("tr[data-agent='solo']")
    expect(row).to_contain_text("SmolLM2-135M-Instruct.Q4_1")
    expect(row).to_contain_text("512 (flag)")  # tokens per slot, and what decided
    expect(page.locator("#connection")).to_have_text("live")
    # The throughput chart draws from the first second: a fleet at rest is a flat line at 0.
    chart = page.locator("#chart")
    line = chart.locator("polyline")
    expect(chart).to_have_attribute("data-points", re.compile(r"^[1-9]\d*$"))
    expect(chart).to_have_attribute("data-latest", "0")
    expect(chart).to_have_attribute("data-peak", "0")
    expect(line).to_have_attribute("points", FLAT_AT_ZERO)
    page.screenshot(path=tmp_path / "agents.png", full_page=True)
    samples_at_rest = chart.get_attribute("data-samples")
    assert samples_at_rest is not None

    # Load: one stream holds a slot until cancelled; the bar follows it up and down, and the
    # chart moves: it takes samples on its own clock and rises above 0.
    stream = c.inference.Generate(to_inference(prompt_request(COUNTING_PROMPT, 400)))
    assert next(stream).HasField("text")
    expect(row.locator("td[data-busy='1']")).to_be_visible()
    expect(chart).to_have_attribute("data-peak", ABOVE_ZERO)
    expect(chart).not_to_have_attribute("data-samples", samples_at_rest)
    expect(line).not_to_have_attribute("points", FLAT_AT_ZERO)
    page.screenshot(path=tmp_path / "busy.png", full_page=True)
    stream.cancel()
    expect(row.locator("td[data-busy='0']")).to_be_visible()
    expect(chart).to_have_attribute("data-latest", "0")  # back at rest

    # A bad value is refused with the balancer's own message; a good one is applied.
    page.fill("#source-value", "no-such-model")
    page.click("#state-form button[type=submit]")
    message = page.locator("#state-message")
    expect(message).to_have_class("error")
    expect(message).to_contain_text("unknown packaged model 'no-such-model'")
    page.screenshot(path=tmp_path / "state-refused.png", full_page=True)
    # A URL source goes out with its pin (pip's #sha256= form); the balancer's checks answer.
    page.select_option("#source-kind", "url")
    page.fill("#source-value", "https://models.example/m.gguf#sha256=abc")
    page.click("#state-form button[type=submit]")
    expect(message).to_contain_text("state.model.url.sha256: must be 64 hex digits")
    page.fill("#source-value", f"http://models.example/m.gguf#sha256={'a' * 64}")
    page.click("#state-form button[type=submit]")
    expect(message).to_contain_text("plain-http model URLs are refused")
    page.select_option("#source-kind", "packaged")
    page.fill("#source-value", "smollm2-135m")
    # A placement the balancer refuses, then one it takes (a q8_0 K cache, 64-token ubatches).
    page.select_option("[data-placement='cacheTypeV']", "KV_CACHE_TYPE_Q8_0")
    page.select_option("[data-placement='flashAttention']", "FLASH_ATTENTION_OFF")
    page.click("#state-form button[type=submit]")
    expect(message).to_contain_text("needs flash attention")
    page.select_option("[data-placement='cacheTypeV']", "")
    page.select_option("[data-placement='flashAttention']", "")
    page.select_option("[data-placement='cacheTypeK']", "KV_CACHE_TYPE_Q8_0")
    page.fill("[data-placement='ubatchSize']", "64")
    page.fill("[data-sampling='temperature']", "0")
    page.fill("[data-sampling='topK']", "40")
    page.click("#state-form button[type=submit]")
    expect(message).to_have_text("Applied as v1.")
    expect(page.locator("#state-version")).to_have_text("v1")
    applied = c.desired_state().state
    assert (applied.defaults.sampling.temperature, applied.defaults.sampling.top_k) == (0, 40)
    assert applied.placement == desired_state_pb2.Placement(
        cache_type_k=desired_state_pb2.KV_CACHE_TYPE_Q8_0, ubatch_size=64
    )
    expect(page.locator("[data-placement='cacheTypeK']")).to_have_value("KV_CACHE_TYPE_Q8_0")
    c.wait_applied(1)
    expect(row).to_contain_text("v1")

    # The playground refuses what the checks refuse, with their message...
    page.fill("#prompt", "Say hello to the sea.")
    page.fill("#max-tokens", "100000")  # more than a slot's context: the agent refuses it
    page.click("#prompt-form button[type=submit]")
    summary = page.locator("#summary")
    expect(summary).to_have_class("error")
    expect(summary).to_contain_text("max_tokens")
    expect(page.locator(".turn")).to_have_count(0)
    # ... and streams the reply, then says who served it.
    page.fill("#prompt", "Say hello to the sea.")
    page.fill("#max-tokens", "12")
    page.click("#prompt-form button[type=submit]")
    # Sampled at the panel's default temperature: the model may end before the cap.
    expect(summary).to_have_text(
        re.compile(r"^solo · SmolLM2-135M-Instruct\.Q4_1 · ([1-9]|1[0-2]) tokens · first token ")
    )
    reply = page.locator(".turn.assistant")
    assert reply.inner_text().strip()
    page.screenshot(path=tmp_path / "playground.png", full_page=True)

    assert errors == []
    # The same endpoints refuse bad bodies with 400 and the field, for any client.
    refused = httpx.post(
        f"{c.balancer.web}/api/generate", json={"messages": [], "max_tokens": 4}, timeout=30
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["field"] == "messages"
    declared = {"Content-Type": "application/json"}  # else a 415 (tests/test_panel_security.py)
    refused = httpx.put(f"{c.balancer.web}/api/state", content=b"{", headers=declared, timeout=30)
    assert refused.status_code == 400
    assert "not a desired state" in refused.json()["error"]["message"]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "agents.png", "busy.png", "playground.png", "state-refused.png"
    ]  # fmt: skip
