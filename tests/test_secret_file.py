"""Credential files: the first line is presented, every line accepted, a changed file read
again (a bad one keeps the previous credentials), and no file's content in an error."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from paddler.common import secret_file
from paddler.common.api_keys import ApiKeys, KeyBusyError
from paddler.common.errors import ConfigurationError
from paddler.common.secret_file import SecretFile


def _wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the file was never read again"
        time.sleep(0.05)


def test_a_rotation_accepts_both_credentials_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secret_file, "RECHECK_INTERVAL_S", 0.0)  # look at every use
    old, new = secrets.token_hex(20), secrets.token_hex(20)
    path = tmp_path / "agent-token"
    path.write_text(f"{old}\n")
    token = SecretFile(path, "agent token")
    assert token.value == old and token.matches(old) and not token.matches(new)
    path.write_text(f"{old}\n{new}\n")  # step 1: accept the new one, still present the old
    _wait_until(lambda: token.matches(new))
    assert token.value == old and token.matches(old)
    path.write_text(f"{new}\n{old}\n")  # step 2: present the new one
    _wait_until(lambda: token.value == new)
    assert token.matches(old)
    path.write_text("short\n")  # a bad file: the previous credentials stay
    assert token.value == new and token.matches(old)
    path.write_text(f"{new}\n")  # step 3: the old one goes
    _wait_until(lambda: not token.matches(old))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("abc", "at least 16 characters"),
        ("has a space inside it here", "printable ASCII without spaces"),
    ],
)
def test_a_bad_credential_file_is_refused_without_its_content(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "admin-key"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as caught:
        SecretFile(path, "admin key")
    assert message in caught.value.message
    if text:
        assert text not in caught.value.message


def test_an_api_key_runs_at_most_its_limit_and_names_never_keys(tmp_path: Path) -> None:
    key, other = secrets.token_hex(20), secrets.token_hex(20)
    path = tmp_path / "api-keys"
    path.write_text(f"# team keys\nteam_a:{key}:2\nteam-b:{other}\n")
    keys = ApiKeys(path)
    first = keys.identify(key)
    assert first is not None and first.name == "team_a"
    assert keys.identify(secrets.token_hex(20)) is None
    releases = [keys.claim(first), keys.claim(first)]
    with pytest.raises(KeyBusyError) as caught:
        keys.claim(first)
    assert "team_a" in str(caught.value) and key not in str(caught.value)
    releases[0]()
    releases[0]()  # releasing twice counts once
    keys.claim(first)()
    path.write_text(f"team_a:{key}\nteam_a:{other}\n")
    with pytest.raises(ConfigurationError) as duplicate:
        ApiKeys(path)
    assert "line 2" in duplicate.value.message and other not in duplicate.value.message
