"""The operator's ``--openai-*`` flags: model aliases and CORS origins."""

from __future__ import annotations

import httpx
import openai

from tests.cluster import cluster
from tests.openai_clients import MODEL

ORIGIN = "http://app.test"


def test_aliases_are_served_and_only_listed_origins_may_call_from_a_browser() -> None:
    flags = ("--openai-model-alias", "gpt-4o", "--openai-cors-origin", ORIGIN)
    with cluster(("solo", 1), balancer_args=flags) as c:
        base = c.balancer.openai
        with openai.OpenAI(base_url=base, api_key="unused", max_retries=0) as client:
            assert [model.id for model in client.models.list()] == [MODEL, "gpt-4o"]
            reply = client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
            )
            assert reply.choices[0].message.content
        preflight = {"Access-Control-Request-Method": "POST"}
        allowed = httpx.options(f"{base}/chat/completions", headers={"Origin": ORIGIN, **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == ORIGIN
        other = httpx.options(
            f"{base}/chat/completions", headers={"Origin": "http://evil.test", **preflight}
        )
        assert "access-control-allow-origin" not in other.headers


def test_without_cors_origins_no_browser_origin_is_allowed() -> None:
    with cluster() as c:
        reply = httpx.get(f"{c.balancer.openai}/models", headers={"Origin": ORIGIN})
        assert reply.status_code == 200
        assert "access-control-allow-origin" not in reply.headers
