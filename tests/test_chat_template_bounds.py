"""A chat template cannot make one call build a huge value (a padding, a format width, a
repetition, a join...): each such template is refused with INVALID_ARGUMENT before anything
is built, and ordinary templates (the packaged model's, ChatML, one with tools) render as
before."""

from __future__ import annotations

import grpc
import pytest

from paddler.agent.default_model import default_model_path
from paddler.agent.llama_model import LlamaModel
from paddler.common.chat_template import CHATML, ChatTemplate
from paddler.common.errors import InvalidArgumentError
from paddler.common.template_measures import MAX_AMPLIFIED_CHARS, MAX_RENDERED_CHARS
from paddler.v1 import desired_state_pb2
from tests.client import conversation_request, error_of, generate, prompt_request
from tests.cluster import cluster, to_inference
from tests.hermes_template import HERMES_TEMPLATE

HELLO = [{"role": "user", "content": "Hello"}]
HUGE = 2_000_000_000
GROWING = "{% set ns = namespace(s='x') %}{% for i in range(40) %}"

# Each asks one call for far more than MAX_RENDERED_CHARS (or a render for more than
# MAX_AMPLIFIED_CHARS in all); were one of them built, this process would need gigabytes.
REFUSED = {
    "percent width": f"{{{{ '%{HUGE}s' % '' }}}}",
    "percent precision": f"{{{{ '%.{HUGE}f' % 1.0 }}}}",
    "percent star width": f"{{{{ '%*s' % ({HUGE}, '') }}}}",
    "percent width after a key": f"{{{{ '%(a(b)){HUGE}s' % {{'a(b)': 1}} }}}}",
    "str.ljust": "{{ ''.ljust(4000000000) }}",
    "str.rjust": f"{{{{ 'x'.rjust({HUGE}) }}}}",
    "str.center": f"{{{{ 'x'.center({HUGE}) }}}}",
    "str.zfill": f"{{{{ '1'.zfill({HUGE}) }}}}",
    "str.expandtabs": f"{{{{ ('\t' * 1000).expandtabs({HUGE}) }}}}",
    "str.format width": f"{{{{ '{{:>{HUGE}}}'.format('') }}}}",
    "str.format nested width": f"{{{{ '{{:>{{w}}}}'.format('', w={HUGE}) }}}}",
    "str.format_map width": f"{{{{ '{{a:>{HUGE}}}'.format_map({{'a': 1}}) }}}}",
    "safe str.center": f"{{{{ ('x'|safe).center({HUGE}) }}}}",
    "safe str.format width": f"{{{{ ('{{:>{HUGE}}}'|safe).format('') }}}}",
    "str.replace": "{{ ('x' * 1000000).replace('x', 'y' * 1000) }}",
    "str.join": "{{ ('y' * 1000).join(['x'] * 1000000) }}",
    "str.translate": "{{ ('x' * 1000000).translate({120: 'y' * 1000}) }}",
    "int.to_bytes": f"{{{{ (0).to_bytes({HUGE}, 'big')|length }}}}",
    "center filter": "{{ 'x'|center(4000000000) }}",
    "indent filter": f"{{{{ 'a\nb'|indent({HUGE}) }}}}",
    "format filter": f"{{{{ '%{HUGE}s'|format('') }}}}",
    "wordwrap filter": "{{ ('x' * 1000000)|wordwrap(1, true, 'y' * 1000) }}",
    "replace filter": "{{ ('x' * 1000000)|replace('', 'y' * 1000) }}",
    "join filter": "{% set x = 'x' * 1000000 %}{{ [x, x, x, x, x]|join }}",
    "batch filter": f"{{{{ [1]|batch({HUGE}, 0)|list }}}}",
    "tojson indent": f"{{{{ [1, 2, 3]|tojson(indent={HUGE}) }}}}",
    "sum of lists": "{{ ([[0]] * 100000)|sum(start=[])|length }}",
    "string repetition": "{{ 'x' * 10**10 }}",
    "list repetition of a big string": "{{ (['x' * 4000000] * 4000000)|length }}",
    "power": "{% set ns = namespace(n=10**1000) %}{% set ns.n = ns.n ** 1000 %}",
    "squaring": (
        "{% set ns = namespace(n=10**1000) %}{% for i in range(40) %}"
        "{% set ns.n = ns.n * ns.n %}{% endfor %}"
    ),
    "doubling with ~": GROWING + "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "doubling with +": GROWING + "{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "doubling in a block": GROWING + "{% set ns.s %}{{ ns.s }}{{ ns.s }}{% endset %}{% endfor %}",
    "doubling through a macro": (
        "{% macro twice(s) %}{{ s }}{{ s }}{% endmacro %}"
        + GROWING
        + "{% set ns.s = twice(ns.s) %}{% endfor %}"
    ),
    "many paddings together": "{{ range(100000)|map('center', 4000000)|list|length }}",
}


@pytest.mark.parametrize("source", list(REFUSED.values()), ids=list(REFUSED))
def test_a_call_that_would_build_too_much_is_refused_as_invalid_argument(source: str) -> None:
    template = ChatTemplate(source, "", "")
    with pytest.raises(InvalidArgumentError) as refused:
        template.render(HELLO)
    violation = refused.value.violations[0]
    assert violation.field == "input.conversation"
    assert "the chat template could not render this conversation" in violation.description
    limits = (f"over the limit of {MAX_RENDERED_CHARS}", f"passed {MAX_AMPLIFIED_CHARS}")
    too_large = ("a power in the template is too large", "a product in the template is too large")
    assert any(words in violation.description for words in (*limits, *too_large))


# Widths, joins and repetitions within bounds behave as Python's and Jinja's own.
WITHIN = {
    "{{ '%5s|%-4d|%.2f' % ('x', 7, 3.14159) }}": "    x|7   |3.14",
    "{{ '%(a)3s%%' % {'a': 1} }}": "  1%",
    "{{ '%*s' % (3, 'x') }}": "  x",
    "{{ '{:>5}|{:.1f}|{w:_^{n}}'.format('x', 2.25, w='y', n=5) }}": "    x|2.2|__y__",
    "{{ 'ab'.ljust(4, '.') ~ 'cd'.center(6, '*') ~ '7'.zfill(3) }}": "ab..**cd**007",
    "{{ 'x'|center(5) }}|{{ 'a\nb'|indent(2) }}": "  x  |a\n  b",
    "{{ '%s-%s'|format(1, 2) }}": "1-2",
    "{{ 'a b c'|wordwrap(3) }}": "a b\nc",
    "{{ 'abc'|replace('b', 'xx') ~ 'abc'.replace('', '-') }}": "axxc-a-b-c-",
    "{{ ['a', 'b']|join(', ') ~ ' ' ~ '+'.join(['c', 'd']) }}": "a, b c+d",
    "{{ [1, 2, 3, 4, 5]|batch(2, 0)|list }}": "[[1, 2], [3, 4], [5, 0]]",
    "{{ {'a': [1]}|tojson(indent=2) }}": '{\n  "a": [\n    1\n  ]\n}',
    "{{ [[1], [2]]|sum(start=[]) }}": "[1, 2]",
    "{{ '-' * 3 ~ [0] * 2 ~ 2 ** 10 ~ 3 * 4 }}": "---[0, 0]102412",
    "{{ 'abc'.translate({98: 'XY'}) }}": "aXYc",
}


@pytest.mark.parametrize(("source", "expected"), list(WITHIN.items()))
def test_widths_and_repetitions_within_bounds_render_as_before(source: str, expected: str) -> None:
    assert ChatTemplate(source, "", "").render(HELLO) == expected


def test_the_packaged_models_template_renders_a_conversation() -> None:
    model = LlamaModel(default_model_path())
    try:
        assert model.chat_template is not None
        template = ChatTemplate(model.chat_template, model.bos_text, model.eos_text)
        conversation = [{"role": "system", "content": "Be brief."}, *HELLO]
        rendered = template.render(conversation)
    finally:
        model.close()
    assert rendered.endswith(
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chatml_and_a_template_with_tools_render() -> None:
    chatml = ChatTemplate(CHATML, "", "").render(HELLO)
    assert chatml == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    rendered = ChatTemplate(HERMES_TEMPLATE, "", "").render(HELLO, [tool])
    assert '"name": "get_weather"' in rendered
    assert rendered.endswith("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")


def test_an_override_that_pads_hugely_fails_its_requests_and_the_agent_serves_on() -> None:
    padding = f"{{{{ '%{HUGE}s' % '' }}}}{{{{ messages[0]['content'] }}}}"
    with cluster(("solo", 1)) as c:
        smollm = desired_state_pb2.ModelSource(packaged="smollm2-135m")
        c.set_state(desired_state_pb2.DesiredState(model=smollm, chat_template_override=padding))
        c.wait_applied(1)
        error = error_of(c.inference, to_inference(conversation_request([("user", "Hi")])))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"asks for {HUGE} characters" in (error.details() or "")
        reply = generate(c.inference, to_inference(prompt_request("Once upon", max_tokens=2)))
        assert reply.summary.agent_name == "solo"
        assert [a.name for a in c.list_agents()] == ["solo"]
