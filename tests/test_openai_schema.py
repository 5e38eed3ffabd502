"""schemathesis against the OpenAI API's own OpenAPI document, on a real balancer and agent:
generated requests never get a 5xx or a response the document does not allow."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.cluster import cluster

# Requests per operation and mode (valid by the document, and not, for the three that take a
# body): about 720 requests in all.
EXAMPLES = 80
POSITIVE = schemathesis.GenerationMode.POSITIVE


def _fuzz(operation: Any, mode: schemathesis.GenerationMode, checked: dict[str, int]) -> None:
    """Send ``EXAMPLES`` generated requests (the same ones every run) and check each reply."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(timeout=600)
        checked[operation.label] = checked.get(operation.label, 0) + 1

    check()


def test_no_generated_request_breaks_the_api() -> None:
    with cluster(("solo", 2)) as c:
        base = c.balancer.openai.removesuffix("/v1")
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
        assert len(operations) == 7
        checked: dict[str, int] = {}
        for operation in operations:
            takes_input = operation.method.upper() == "POST"
            modes = list(schemathesis.GenerationMode) if takes_input else [POSITIVE]
            for mode in modes:
                _fuzz(operation, mode, checked)
    assert sum(checked.values()) >= 650, checked
