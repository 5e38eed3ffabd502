"""Models from an http(s) URL: resumable downloads into a cache named by the URL, checked
before they are used, against a real HTTP server on loopback (the network here reaches no
model host)."""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path

import grpc
import pytest

from paddler.agent.default_model import default_model_path
from paddler.agent.download_progress import DownloadCancelledError, DownloadProgress
from paddler.agent.llama_model import ModelLoadError
from paddler.agent.state_report import StateReport
from paddler.agent.url_download import (
    MAX_REDIRECTS,
    PARTIAL_SUFFIX,
    download_url,
    url_cache_path,
)
from paddler.common.model_sources import ModelSourcePolicy
from paddler.v1 import desired_state_pb2, status_pb2
from tests.client import field_violations, generate, prompt_request
from tests.cluster import cluster, to_inference
from tests.local_files import FileSite, file_site
from tests.processes import run_paddler

DATA = b"GGUF" + random.Random(1).randbytes(3 << 20)
OTHER = b"GGUF" + random.Random(2).randbytes(2 << 20)
HTTP_ALLOWED = ModelSourcePolicy(allow_http=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _url(url: str, sha256: str = "") -> desired_state_pb2.UrlModel:
    return desired_state_pb2.UrlModel(url=url, sha256=sha256)


def _source(model: desired_state_pb2.UrlModel) -> desired_state_pb2.ModelSource:
    return desired_state_pb2.ModelSource(url=model)


def _download(
    model: desired_state_pb2.UrlModel,
    cache: Path,
    policy: ModelSourcePolicy = HTTP_ALLOWED,
    report: StateReport | None = None,
) -> Path:
    progress = DownloadProgress(report or StateReport())
    return download_url(model, url_cache_path(cache, model), policy, progress)


def _model_bytes(cache: Path) -> list[Path]:
    """Every file under ``cache`` but the (empty) lock files."""
    return [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")]


def test_a_cut_download_resumes_where_it_stopped(tmp_path: Path) -> None:
    site = FileSite(files={"/m.gguf": DATA}, cuts=[1 << 20])
    with file_site(site) as base:
        model = _url(f"{base}/m.gguf", _sha256(DATA))
        target = url_cache_path(tmp_path, model)
        with pytest.raises(ModelLoadError, match="applying the state again resumes"):
            _download(model, tmp_path)
        partial = target.with_name(target.name + PARTIAL_SUFFIX)
        kept = partial.stat().st_size
        assert 0 < kept <= 1 << 20 and not target.exists()
        report = StateReport()
        assert _download(model, tmp_path, report=report) == target
        assert site.gets[-1] == ("/m.gguf", f"bytes={kept}-")  # only the rest was asked for
        assert target.read_bytes() == DATA
        assert report.bytes_done == report.bytes_total == len(DATA)
        assert _model_bytes(tmp_path) == [target]  # no partial file or validator is left
        asked = len(site.gets)
        assert _download(model, tmp_path) == target  # cached: no request at all
        assert len(site.gets) == asked


def test_a_file_changed_upstream_since_the_cut_starts_over(tmp_path: Path) -> None:
    site = FileSite(files={"/m.gguf": DATA}, cuts=[1 << 20])
    with file_site(site) as base:
        model = _url(f"{base}/m.gguf")
        with pytest.raises(ModelLoadError, match="resumes"):
            _download(model, tmp_path)
        site.files["/m.gguf"] = OTHER  # a new ETag: If-Range gets the whole new file
        assert _download(model, tmp_path).read_bytes() == OTHER
        assert site.gets[-1][1].startswith("bytes=")


def test_a_wrong_sha256_is_refused_and_nothing_is_kept(tmp_path: Path) -> None:
    with (
        file_site(FileSite(files={"/m.gguf": DATA})) as base,
        pytest.raises(ModelLoadError, match=f"has sha256 {_sha256(DATA)}, not the"),
    ):
        _download(_url(f"{base}/m.gguf", _sha256(OTHER)), tmp_path)
    assert _model_bytes(tmp_path) == []


def test_a_file_that_is_not_a_gguf_is_refused_and_nothing_is_kept(tmp_path: Path) -> None:
    with (
        file_site(FileSite(files={"/login": b"<html>sign in</html>"})) as base,
        pytest.raises(ModelLoadError, match="is not a GGUF file"),
    ):
        _download(_url(f"{base}/login"), tmp_path)
    assert _model_bytes(tmp_path) == []


def test_redirects_are_followed_within_limits_and_the_policy(tmp_path: Path) -> None:
    hops = {f"/r{n}": f"/r{n + 1}" for n in range(MAX_REDIRECTS + 1)}
    site = FileSite(files={"/m.gguf": DATA}, redirects={"/moved": "/m.gguf", **hops})
    with file_site(site) as base:
        assert _download(_url(f"{base}/moved"), tmp_path).read_bytes() == DATA
        with pytest.raises(ModelLoadError, match=f"more than {MAX_REDIRECTS} redirects"):
            _download(_url(f"{base}/r0"), tmp_path)
        port = base.rpartition(":")[2]
        site.redirects["/elsewhere"] = f"http://localhost:{port}/m.gguf"
        only_loopback = ModelSourcePolicy(url_hosts=("127.0.0.1",), allow_http=True)
        refused = r"not fetched: a redirect: the host 'localhost' is not an allowed"
        with pytest.raises(ModelLoadError, match=refused):
            _download(_url(f"{base}/elsewhere"), tmp_path, only_loopback)
        with pytest.raises(ModelLoadError, match="plain-http model URLs are refused"):
            _download(_url(f"{base}/m.gguf"), tmp_path / "strict", ModelSourcePolicy())
    assert not (tmp_path / "strict").exists() or _model_bytes(tmp_path / "strict") == []


def test_an_error_status_names_the_url_and_the_status(tmp_path: Path) -> None:
    with (
        file_site(FileSite()) as base,
        pytest.raises(ModelLoadError, match=r"/absent\.gguf answered HTTP 404 Not Found"),
    ):
        _download(_url(f"{base}/absent.gguf"), tmp_path)


def test_a_cancelled_download_keeps_what_came_for_the_next_try(tmp_path: Path) -> None:
    with file_site(FileSite(files={"/m.gguf": DATA})) as base:
        model = _url(f"{base}/m.gguf")
        cancelled = threading.Event()
        cancelled.set()
        progress = DownloadProgress(StateReport(), cancelled)
        target = url_cache_path(tmp_path, model)
        with pytest.raises(DownloadCancelledError):
            download_url(model, target, HTTP_ALLOWED, progress)
        assert target.with_name(target.name + PARTIAL_SUFFIX).stat().st_size > 0
        assert not target.exists()


def test_the_balancer_checks_model_urls_before_any_agent_sees_them() -> None:
    good = "https://models.example/m.gguf"
    refused = [
        (_url("http://models.example/m.gguf"), "state.model.url.url", "plain-http"),
        (_url("ftp://models.example/m.gguf"), "state.model.url.url", "https://"),
        (_url("https://user:secret@models.example/m.gguf"), "state.model.url.url", "password"),
        (_url("https://models.example:99999/m.gguf"), "state.model.url.url", "not a URL"),
        (_url(good + "?" + "x" * 2048), "state.model.url.url", "at most 2048"),
        (_url(good, "abc"), "state.model.url.sha256", "64 hex digits"),
        (_url("https://elsewhere.example/m.gguf"), "state.model.url.url", "allowed model host"),
    ]
    with cluster(balancer_args=("--allowed-url-host", "MODELS.example")) as c:
        for model, field, words in refused:
            with pytest.raises(grpc.RpcError) as caught:
                c.set_state(desired_state_pb2.DesiredState(model=_source(model)))
            assert field_violations(caught.value) == [field], model
            assert words in (caught.value.details() or ""), caught.value.details()
        pinned = _url(good, "A" * 64)
        assert c.set_state(desired_state_pb2.DesiredState(model=_source(pinned))) == 1


def test_an_agent_serves_a_model_by_url_after_resuming_a_cut_download(tmp_path: Path) -> None:
    data = default_model_path().read_bytes()
    site = FileSite(files={"/models/smollm2.gguf": data}, cuts=[len(data) // 3])
    cache = tmp_path / "cache"
    with (
        file_site(site) as base,
        cluster(balancer_args=("--allow-http-models",)) as c,
    ):
        c.start_agent(
            "fetcher", "--slots", "1", "--allow-http-models", env={"PADDLER_CACHE_DIR": str(cache)}
        )
        url = f"{base}/models/smollm2.gguf"
        command = ["state", "set", "--model", url, "--model-sha256", _sha256(data)]
        result = run_paddler(*command, "--address", c.balancer.management)
        assert result.returncode == 0, result.stderr
        agents = c.wait_for(
            lambda agents: agents[0].phase == status_pb2.STATE_PHASE_FAILED, timeout_s=120
        )
        assert "applying the state again resumes" in agents[0].issues[0]
        result = run_paddler(*command, "--wait", "--address", c.balancer.management)
        assert result.returncode == 0, result.stderr
        ranges = [asked for path, asked in site.gets if path == "/models/smollm2.gguf"]
        assert ranges[0] == "" and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
        reply = generate(c.inference, to_inference(prompt_request("Once upon", max_tokens=3)))
        assert (reply.summary.model, reply.summary.state_version) == ("smollm2", 2)
        model = c.desired_state().state.model.url
        assert url_cache_path(cache / "models", model).read_bytes() == data
        assert not list(cache.rglob(f"*{PARTIAL_SUFFIX}"))
