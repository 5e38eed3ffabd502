"""TextStream: whole characters out of split bytes, stop strings cut and never leaked."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from paddler.agent.text_stream import TextStream


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@given(st.text(), st.lists(st.integers(min_value=0)))
def test_split_characters_are_joined(text: str, cuts: list[int]) -> None:
    stream = TextStream(stop=())
    out = []
    for piece in _split(text.encode(), cuts):
        sent, stopped = stream.push(piece)
        assert not stopped
        out.append(sent)
    out.append(stream.flush())
    assert "".join(out) == text


@given(st.text(), st.text(min_size=1), st.text(), st.lists(st.integers(min_value=0)))
def test_output_ends_before_the_first_stop_string(
    before: str, stop: str, after: str, cuts: list[int]
) -> None:
    text = before + stop + after
    stream = TextStream(stop=[stop])
    sent = []
    stopped = False
    for piece in _split(text.encode(), cuts):
        chunk, stopped = stream.push(piece)
        sent.append(chunk)
        if stopped:
            break
    assert stopped
    assert "".join(sent) == text[: text.find(stop)]


def test_a_partial_stop_string_is_held_then_released() -> None:
    stream = TextStream(stop=["STOP"])
    assert stream.push(b"abc ST") == ("abc ", False)
    assert stream.push(b"ay") == ("STay", False)
    assert stream.flush() == ""


def test_a_dangling_byte_becomes_a_replacement_character() -> None:
    stream = TextStream(stop=())
    assert stream.push("é".encode()[:1]) == ("", False)
    assert stream.flush() == "\ufffd"
