"""The generic tool format read as it streams: a text reply's JSON string decoded piece by
piece however the pieces split its escapes, and a call checked against its tool's parameters."""

from __future__ import annotations

import json

import pytest

from paddler.agent.tool_reply import GenericReply, HermesReply
from paddler.common.errors import InternalError
from paddler.common.rpc_status import INVALID_TOOL_CALL

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city"],
}
TRICKY = 'Line one\nsaid "hi" \\ tab\there, café, 😀 and \u2028 end'


def reply_of(text: str) -> str:
    return json.dumps({"response": text}, separators=(",", ":"))


@pytest.mark.parametrize("ascii_only", [True, False])
def test_a_text_reply_comes_out_whole_wherever_the_pieces_split(ascii_only: bool) -> None:
    raw = json.dumps({"response": TRICKY}, separators=(",", ":"), ensure_ascii=ascii_only)
    for cut in range(1, len(raw)):
        reply = GenericReply({"weather": WEATHER})
        text = reply.feed(raw[:cut]) + reply.feed(raw[cut:])
        assert text == TRICKY, cut
        assert reply.call() is None


def test_one_character_at_a_time_never_sends_half_a_surrogate_pair() -> None:
    raw = json.dumps({"response": "😀😀"}, separators=(",", ":"))  # \ud83d\ude00 twice
    reply = GenericReply({})
    sent = [reply.feed(char) for char in raw]
    assert "".join(sent) == "😀😀"
    for piece in sent:
        piece.encode()  # a lone surrogate would raise: each piece is valid UTF-8 on its own


def test_a_call_becomes_one_tool_call_with_compact_arguments() -> None:
    reply = GenericReply({"weather": WEATHER})
    raw = '{"tool_call":{"name":"weather","arguments":{"city":"Paris","days":2}}}'
    assert "".join(reply.feed(raw[i : i + 5]) for i in range(0, len(raw), 5)) == ""
    call = reply.call()
    assert call is not None
    assert call.name == "weather"
    assert json.loads(call.arguments) == {"city": "Paris", "days": 2}
    assert call.id.startswith("call_")


def test_a_call_cut_short_is_no_call() -> None:
    reply = GenericReply({"weather": WEATHER})
    reply.feed('{"tool_call":{"name":"weather","argu')
    assert reply.call() is None


def test_arguments_that_break_the_schema_are_an_internal_error() -> None:
    reply = GenericReply({"weather": WEATHER})
    reply.feed('{"tool_call":{"name":"weather","arguments":{"days":0}}}')
    with pytest.raises(InternalError, match="does not match its parameters") as raised:
        reply.call()
    assert raised.value.reason == INVALID_TOOL_CALL  # no other agent is tried


def test_a_hermes_reply_sends_text_before_the_tag_and_holds_a_partial_tag_back() -> None:
    reply = HermesReply({"weather": WEATHER})
    assert reply.feed("Let me check. <tool") == "Let me check. "
    assert reply.feed('_call>\n{"name":"weather","arguments":{"city":"Rome"}}\n</tool_call>') == ""
    assert reply.flush() == ""
    call = reply.call()
    assert call is not None
    assert (call.name, json.loads(call.arguments)) == ("weather", {"city": "Rome"})


def test_a_hermes_reply_without_a_call_flushes_what_it_held_back() -> None:
    reply = HermesReply({"weather": WEATHER})
    assert reply.feed("a < b, and <to") == "a < b, and "
    assert reply.flush() == "<to"
    assert reply.call() is None
