"""The balancer's list of packaged model names and the agent's resolvers agree."""

from __future__ import annotations

from paddler.agent.model_source import PACKAGED_RESOLVERS
from paddler.common.desired_state import PACKAGED_MODELS


def test_every_packaged_name_the_balancer_accepts_resolves_on_the_agent() -> None:
    assert set(PACKAGED_RESOLVERS) == set(PACKAGED_MODELS)
    for resolve in PACKAGED_RESOLVERS.values():
        assert resolve().read_bytes()[:4] == b"GGUF"
