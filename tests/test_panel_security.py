"""The admin panel behind the admin key, and the web server's Host and Origin checks, against a
real balancer (with a simulated agent) over HTTP and in the real Chromium.

Signing in with the key opens a session cookie (HttpOnly, SameSite=Strict) that reads and
changes the desired state until logout; a wrong key is refused and counted; the key also works
as a Bearer on /api/*. A DNS-rebound Host, another origin or a body not declared JSON changes
nothing; /metrics stays open; neither the key nor a session token reaches the logs.
"""

from __future__ import annotations

import json
import secrets
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.local_http import serving
from tests.metric_samples import parse_samples, value
from tests.processes import BalancerProcess, ServerProcess

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 60_000
TIMEOUT_S = 30
COOKIE = "paddler_session"
SESSION_LIFETIME_S = 12 * 60 * 60
# Chromium resolves this name to 127.0.0.1 (--host-resolver-rules): a DNS-rebound page.
REBOUND = "attacker.example"
STATE = {"model": {"packaged": "smollm2-135m"}, "defaults": {"sampling": {"temperature": 0.5}}}
PANEL_ROUTES = [
    ("GET", "/"), ("GET", "/static/panel.js"), ("GET", "/static/login.js"),
    ("GET", "/static/panel.css"), ("GET", "/api/state"), ("GET", "/api/events"),
    ("GET", "/api/session"), ("PUT", "/api/state"), ("POST", "/api/generate"),
    ("POST", "/api/login"), ("POST", "/api/logout"),
]  # fmt: skip


@dataclass
class Secured:
    """A balancer with an admin key (``key``, in ``key_file``), a simulated agent registered
    to it, and every key and session token the tests used (to look for in the logs)."""

    balancer: BalancerProcess
    key_file: Path
    key: str
    tokens: list[str] = field(default_factory=list)

    @property
    def web(self) -> str:
        """The web server's base URL."""
        return self.balancer.web

    @property
    def port(self) -> int:
        """The web server's port."""
        return int(self.web.rpartition(":")[2])

    @property
    def bearer(self) -> dict[str, str]:
        """The admin key as a script sends it."""
        return {"Authorization": f"Bearer {self.key}"}

    def sign_in(self) -> dict[str, str]:
        """Sign in over HTTP; the session's cookie header."""
        reply = httpx.post(f"{self.web}/api/login", json={"key": self.key}, timeout=TIMEOUT_S)
        assert reply.status_code == 200, reply.text
        token = reply.cookies[COOKIE]
        self.tokens.append(token)
        return {"Cookie": f"{COOKIE}={token}"}

    def version(self) -> int:
        """The desired state's version, read with the key."""
        reply = httpx.get(f"{self.web}/api/state", headers=self.bearer, timeout=TIMEOUT_S)
        assert reply.status_code == 200, reply.text
        return int(reply.json()["version"])

    def refused(self, reason: str) -> float:
        """The panel's refused credentials for ``reason``, from /metrics."""
        text = httpx.get(f"{self.web}/metrics", timeout=TIMEOUT_S).text
        return value(
            parse_samples(text), "paddler_credentials_refused_total", surface="panel", reason=reason
        )


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    folder = tmp_path_factory.mktemp("panel")
    key = secrets.token_hex(24)
    key_file = folder / "admin-key"
    key_file.write_text(key + "\n")
    balancer = BalancerProcess(["--admin-key-file", str(key_file)])
    fleet = ServerProcess(
        "simulated-fleet",
        ["--balancer", balancer.management, "--agents", "1", "--slots", "1"],
        "simulated fleet listening",
        None,
    )
    result = Secured(balancer, key_file, key)
    try:
        balancer.wait_logs("agent registered")
        yield result
    finally:
        fleet.stop()
        balancer.stop()
    logs = "".join(balancer.lines + fleet.lines)
    for used in {key, result.key}:  # the first key, and the one that replaced it
        assert used not in logs, "an admin key was logged"
    assert result.tokens, "no session was opened"
    for token in result.tokens:
        assert token not in logs, "a session token was logged"


def _error(reply: httpx.Response, status: int) -> dict[str, Any]:
    """The panel's error of ``reply``, which must have ``status``."""
    assert reply.status_code == status, reply.text
    error: dict[str, Any] = reply.json()["error"]
    assert set(error) == {"field", "message"}
    return error


def _send(
    secured: Secured, method: str, path: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    """``method path`` with the JSON body the route takes."""
    bodies: dict[str, object] = {
        "/api/state": STATE,
        "/api/login": {"key": secured.key},
        "/api/generate": {"messages": [{"role": "user", "content": "Hi."}], "max_tokens": 2},
    }
    body = bodies.get(path, {}) if method != "GET" else None
    return httpx.request(
        method, secured.web + path, json=body, headers=headers or {}, timeout=TIMEOUT_S
    )


def test_without_a_session_the_api_refuses_and_the_page_asks_to_sign_in(
    secured: Secured,
) -> None:
    for method, path in PANEL_ROUTES:
        if path in {"/", "/static/login.js", "/static/panel.css", "/api/login", "/api/logout"}:
            continue  # the sign-in page and its parts
        error = _error(_send(secured, method, path), 401)
        assert "sign in with the admin key" in error["message"]
    forged = {"Cookie": f"{COOKIE}={secrets.token_urlsafe(32)}"}
    _error(_send(secured, "GET", "/api/state", forged), 401)

    page = httpx.get(secured.web + "/", timeout=TIMEOUT_S)
    assert page.status_code == 200
    assert 'id="login-form"' in page.text
    assert "panel.js" not in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert httpx.get(f"{secured.web}/static/login.js", timeout=TIMEOUT_S).status_code == 200


def test_a_wrong_key_is_refused_and_counted(secured: Secured) -> None:
    before = secured.refused("wrong_credential")
    reply = httpx.post(
        f"{secured.web}/api/login", json={"key": secrets.token_hex(24)}, timeout=TIMEOUT_S
    )
    error = _error(reply, 401)
    assert error["field"] == "key"
    assert "not the admin key" in error["message"]
    assert "set-cookie" not in reply.headers
    wrong_bearer = {"Authorization": f"Bearer {secrets.token_hex(24)}"}
    _error(_send(secured, "GET", "/api/state", wrong_bearer), 401)
    assert secured.refused("wrong_credential") == before + 2


def test_the_key_opens_a_session_that_changes_the_state_until_logout(secured: Secured) -> None:
    reply = httpx.post(f"{secured.web}/api/login", json={"key": secured.key}, timeout=TIMEOUT_S)
    assert reply.status_code == 200, reply.text
    token = reply.cookies[COOKIE]
    secured.tokens.append(token)
    cookie = reply.headers["set-cookie"]
    assert secured.key not in cookie
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/", f"max-age={SESSION_LIFETIME_S}"} <= attributes
    assert "secure" not in attributes  # plain HTTP here: a TLS request gets Secure
    session = {"Cookie": f"{COOKIE}={token}"}

    panel = httpx.get(secured.web + "/", headers=session, timeout=TIMEOUT_S)
    assert 'id="agents"' in panel.text
    assert _send(secured, "GET", "/static/panel.js", session).status_code == 200
    assert _send(secured, "GET", "/api/session", session).json() == {"admin_key": True}
    before = secured.version()
    changed = _send(secured, "PUT", "/api/state", session)
    assert changed.status_code == 200, changed.text
    assert int(changed.json()["version"]) == before + 1
    assert changed.json()["state"]["defaults"]["sampling"] == {"temperature": 0.5}

    ended = _send(secured, "POST", "/api/logout", session)
    assert ended.status_code == 200
    assert "max-age=0" in ended.headers["set-cookie"].lower()
    _error(_send(secured, "GET", "/api/state", session), 401)
    _error(_send(secured, "PUT", "/api/state", session), 401)
    assert secured.version() == before + 1


def test_the_admin_key_as_a_bearer_opens_the_api(secured: Secured) -> None:
    before = secured.version()
    changed = _send(secured, "PUT", "/api/state", secured.bearer)
    assert changed.status_code == 200, changed.text
    assert secured.version() == before + 1
    # Only /api/* takes it: the page itself still asks to sign in.
    page = httpx.get(secured.web + "/", headers=secured.bearer, timeout=TIMEOUT_S)
    assert 'id="login-form"' in page.text


def test_a_rebound_host_is_refused_on_every_panel_route(secured: Secured) -> None:
    session = secured.sign_in()
    before = secured.version()
    port = secured.port
    hosts = (f"{REBOUND}:{port}", REBOUND, f"localhost.{REBOUND}:{port}", f"{REBOUND}:x")
    for host in (*hosts, f"127.0.0.1:{'9' * 5000}"):
        for method, path in PANEL_ROUTES:
            headers = {"Host": host, **session, **secured.bearer}
            reply = _send(secured, method, path, headers)
            assert "--web-allowed-host" in _error(reply, 403)["message"], (method, path)
            assert "set-cookie" not in reply.headers
        metrics = httpx.get(f"{secured.web}/metrics", headers={"Host": host}, timeout=TIMEOUT_S)
        assert metrics.status_code == 200
    assert secured.version() == before
    for host in (f"localhost:{port}", f"LocalHost.:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        reply = _send(secured, "GET", "/api/state", {"Host": host, **session})
        assert reply.status_code == 200, (host, reply.text)


def test_a_request_from_another_origin_changes_nothing(secured: Secured) -> None:
    session = secured.sign_in()
    before = secured.version()
    port = secured.port
    for origin in (
        f"http://{REBOUND}",
        f"http://{REBOUND}:{port}",
        "http://127.0.0.1:1",
        f"https://127.0.0.1:{port}",
        "null",
    ):
        for method, path in (
            ("PUT", "/api/state"),
            ("POST", "/api/login"),
            ("POST", "/api/logout"),
        ):
            reply = _send(secured, method, path, {"Origin": origin, **session})
            _error(reply, 403)
            assert "set-cookie" not in reply.headers
    assert secured.version() == before
    assert _send(secured, "GET", "/api/state", session).status_code == 200  # no logout came
    same = _send(secured, "PUT", "/api/state", {"Origin": f"http://127.0.0.1:{port}", **session})
    assert same.status_code == 200, same.text
    assert secured.version() == before + 1


def test_a_body_not_declared_json_is_refused(secured: Secured) -> None:
    before = secured.version()
    body = json.dumps(STATE).encode()
    for content_type in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data"):
        for path, method in (("/api/state", "PUT"), ("/api/login", "POST")):
            headers = {"Content-Type": content_type, **secured.bearer}
            reply = httpx.request(
                method, secured.web + path, content=body, headers=headers, timeout=TIMEOUT_S
            )
            assert "application/json" in _error(reply, 415)["message"]
            assert "set-cookie" not in reply.headers
    reply = httpx.put(
        f"{secured.web}/api/state", content=body, headers=secured.bearer, timeout=TIMEOUT_S
    )
    _error(reply, 415)  # no Content-Type at all
    assert secured.version() == before
    headers = {"Content-Type": "application/json; charset=utf-8", **secured.bearer}
    reply = httpx.put(f"{secured.web}/api/state", content=body, headers=headers, timeout=TIMEOUT_S)
    assert reply.status_code == 200, reply.text


def test_the_openai_api_reads_only_json_bodies(secured: Secured) -> None:
    body = json.dumps({"model": "any", "messages": [{"role": "user", "content": "Hi."}]})
    for headers in ({"Content-Type": "text/plain"}, {}):
        reply = httpx.post(
            f"{secured.balancer.openai}/chat/completions",
            content=body,
            headers=headers,
            timeout=TIMEOUT_S,
        )
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["type"] == "invalid_request_error"


class _Elsewhere(BaseHTTPRequestHandler):
    """A page of another origin (another port of 127.0.0.1)."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>elsewhere</title><p>Another site."
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[str]:
    """The URL of a page of another origin."""
    with serving(_Elsewhere) as url:
        yield f"{url}/"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)")
    rules = f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", rules]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a browser context of its own (its own cookies)."""
    context = browser.new_context()
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    yield opened
    context.close()


def _sign_in(page: Page, secured: Secured, key: str) -> None:
    page.goto(secured.web)
    page.fill("#key", key)
    page.click("#login-form button[type=submit]")


def _session_cookies(page: Page) -> list[dict[str, Any]]:
    return [dict(cookie) for cookie in page.context.cookies() if cookie["name"] == COOKIE]


def test_signing_in_on_the_page_opens_the_panel(page: Page, secured: Secured) -> None:
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # The one 401 provoked on purpose (a wrong key) is the API working.
        provoked = message.location.get("url", "").endswith("/api/login") and (
            "status of 401" in message.text
        )
        if message.type == "error" and not provoked:
            errors.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    _sign_in(page, secured, secrets.token_hex(24))
    expect(page.locator("#login-message")).to_contain_text("not the admin key")
    expect(page.locator("#key")).to_have_value("")
    page.fill("#key", secured.key)
    page.click("#login-form button[type=submit]")
    expect(page.locator("tr[data-agent='sim-0']")).to_be_visible()
    expect(page.locator("#connection")).to_have_text("live")
    assert secured.key not in page.url

    [cookie] = _session_cookies(page)
    secured.tokens.append(cookie["value"])
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/")
    assert page.evaluate("document.cookie") == ""  # no script of the page can read it

    page.click("#logout")
    expect(page.locator("#login-form")).to_be_visible()
    assert _session_cookies(page) == []
    assert errors == []


def test_a_page_of_another_origin_cannot_change_the_state(
    page: Page, secured: Secured, elsewhere: str
) -> None:
    _sign_in(page, secured, secured.key)
    expect(page.locator("#connection")).to_have_text("live")
    secured.tokens.append(_session_cookies(page)[0]["value"])
    before = secured.version()
    refusals = len(secured.balancer.logs("request refused"))
    # Another port of 127.0.0.1 is the same site: the browser sends the SameSite=Strict cookie
    # along, so only the Origin check (and the JSON body the preflight guards) stop these.
    page.goto(elsewhere)
    outcome = page.evaluate(
        """async (panel) => {
          let put;
          try {
            const reply = await fetch(panel + "/api/state", {
              method: "PUT", credentials: "include",
              headers: {"Content-Type": "application/json"},
              body: JSON.stringify({model: {packaged: "gemma3-270m"}}),
            });
            put = reply.status;
          } catch (error) {
            put = "blocked";
          }
          await fetch(panel + "/api/logout", {
            method: "POST", mode: "no-cors", credentials: "include", body: "{}",
          });
          return put;
        }""",
        secured.web,
    )
    assert outcome == "blocked"  # its preflight has no session: the browser never sends it
    refused = secured.balancer.wait_logs("request refused", refusals + 1)[-1]
    assert (refused["check"], refused["path"]) == ("origin", "/api/logout")
    assert secured.version() == before
    page.goto(secured.web)  # still signed in: the logout was refused
    expect(page.locator("#connection")).to_have_text("live")


def test_a_rebound_page_cannot_change_the_state(page: Page, secured: Secured) -> None:
    _sign_in(page, secured, secured.key)
    expect(page.locator("#connection")).to_have_text("live")
    secured.tokens.append(_session_cookies(page)[0]["value"])
    before = secured.version()
    reply = page.goto(f"http://{REBOUND}:{secured.port}/")
    assert reply is not None
    assert reply.status == 403
    statuses = page.evaluate(
        """async () => {
          const put = await fetch("/api/state", {
            method: "PUT", headers: {"Content-Type": "application/json"},
            body: JSON.stringify({model: {packaged: "gemma3-270m"}}),
          });
          const get = await fetch("/api/state");
          return [put.status, get.status];
        }"""
    )
    assert statuses == [403, 403]
    assert secured.version() == before


def test_a_new_admin_key_ends_every_session(secured: Secured) -> None:
    """Last of the module: it changes the balancer's key."""
    session = secured.sign_in()
    old_bearer = secured.bearer
    secured.key = secrets.token_hex(24)
    secured.key_file.write_text(secured.key)
    deadline = time.monotonic() + TIMEOUT_S
    while _send(secured, "GET", "/api/state", session).status_code != 401:
        assert time.monotonic() < deadline, "the session outlived the admin key"
        time.sleep(0.05)
    _error(_send(secured, "GET", "/api/state", old_bearer), 401)
    secured.sign_in()  # the new key opens a new one


def test_over_tls_the_cookie_is_secure(tmp_path: Path) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    chain, private_key, ca_file = tmp_path / "web.pem", tmp_path / "web.key", tmp_path / "ca.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(private_key))
    ca.cert_pem.write_to_path(str(ca_file))
    key = secrets.token_hex(24)
    (tmp_path / "admin-key").write_text(key)
    balancer = BalancerProcess(
        [
            "--admin-key-file", str(tmp_path / "admin-key"),
            "--tls-cert", str(chain), "--tls-key", str(private_key),
        ],
        tls_ca=ca_file,
    )  # fmt: skip
    try:
        web = f"https://{balancer.listening['web']}"
        verify = ssl.create_default_context(cafile=str(ca_file))
        login = f"{web}/api/login"
        # The page's own origin is https://...: its plain-HTTP twin is another origin.
        plain = {"Origin": web.replace("https:", "http:")}
        refused = httpx.post(login, json={"key": key}, headers=plain, verify=verify)
        _error(refused, 403)
        reply = httpx.post(login, json={"key": key}, headers={"Origin": web}, verify=verify)
        assert reply.status_code == 200, reply.text
        attributes = {part.strip().lower() for part in reply.headers["set-cookie"].split(";")}
        assert {"secure", "httponly", "samesite=strict"} <= attributes
        token = reply.cookies[COOKIE]
    finally:
        balancer.stop()
    logs = "".join(balancer.lines)
    assert key not in logs
    assert token not in logs
