"""A model served over HTTP(S), downloaded resumably into the agent's cache.

The cache is named by a hash of the URL and the pinned sha256, so a new URL or a new pin never
reuses old bytes. The bytes go to a partial file beside the target, appended to with HTTP Range
requests (``If-Range`` the validator the server gave, so a file changed upstream starts over)
until whole; then they are checked (the pinned sha256, the GGUF magic), synced and renamed into
place under a file lock, so agents that share the cache take turns and readers never see half a
file. A download cut short keeps its partial file for the next try; a file that fails its check
is removed, partial and all.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from filelock import FileLock, Timeout

from paddler.agent.download_progress import DownloadProgress
from paddler.agent.llama_model import GGUF_MAGIC, ModelLoadError
from paddler.agent.model_files import LOCK_TIMEOUT_S, file_sha256, sync_directory
from paddler.common.errors import InvalidArgumentError
from paddler.common.model_sources import ModelSourcePolicy
from paddler.v1 import desired_state_pb2

PARTIAL_SUFFIX = ".paddler-partial"
VALIDATOR_SUFFIX = ".paddler-validator"
MAX_REDIRECTS = 5
TIMEOUT = httpx.Timeout(60.0, connect=15.0)
_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")
_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def url_cache_path(models_dir: Path, model: desired_state_pb2.UrlModel) -> Path:
    """Where ``model`` is kept under ``models_dir``: a folder named by the hash of its URL and
    pin, holding the file under the URL's own file name."""
    key = hashlib.sha256(f"{model.url}\n{model.sha256.lower()}".encode()).hexdigest()[:32]
    name = _FILE_NAME.sub("_", urlsplit(model.url).path.rpartition("/")[2])[-128:]
    if not name.strip("._"):
        name = "model.gguf"
    return models_dir / "url" / key / name


def download_url(
    model: desired_state_pb2.UrlModel,
    target: Path,
    policy: ModelSourcePolicy,
    progress: DownloadProgress,
) -> Path:
    """``target`` holding the whole, checked file at ``model.url`` (blocking); resumes what an
    earlier try left. ModelLoadError says what failed; DownloadCancelledError keeps the part."""
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(partial) + ".lock", timeout=LOCK_TIMEOUT_S):
            if not target.is_file():
                _fetch(model, partial, policy, progress)
                _check(model, partial)
                with partial.open("rb+") as handle:
                    os.fsync(handle.fileno())
                partial.replace(target)
                _validator(partial).unlink(missing_ok=True)
                sync_directory(target.parent)
    except Timeout as error:
        raise ModelLoadError(
            f"timed out after {LOCK_TIMEOUT_S:g} s waiting for another process to download "
            f"{model.url}"
        ) from error
    except OSError as error:
        raise ModelLoadError(f"could not write the model file {target}: {error}") from error
    return target


def _validator(partial: Path) -> Path:
    return partial.with_name(partial.name.removesuffix(PARTIAL_SUFFIX) + VALIDATOR_SUFFIX)


def _fetch(
    model: desired_state_pb2.UrlModel,
    partial: Path,
    policy: ModelSourcePolicy,
    progress: DownloadProgress,
) -> None:
    """Append to ``partial`` until it holds the whole file (or raise)."""
    validator_file = _validator(partial)
    offset = partial.stat().st_size if partial.exists() else 0
    validator = validator_file.read_text() if validator_file.exists() else ""
    headers = {"Accept-Encoding": "identity"}
    if offset and validator:
        headers |= {"Range": f"bytes={offset}-", "If-Range": validator}

    hops = 0

    def check_hop(request: httpx.Request) -> None:
        nonlocal hops
        policy.check_url(str(request.url), "a redirect" if hops else "state.model.url.url")
        hops += 1

    try:
        with (
            httpx.Client(
                follow_redirects=True,
                max_redirects=MAX_REDIRECTS,
                timeout=TIMEOUT,
                event_hooks={"request": [check_hop]},
            ) as client,
            client.stream("GET", model.url, headers=headers) as response,
        ):
            start, total = _start_of(response, offset if "Range" in headers else 0)
            if start == total:  # a whole file waited for its rename
                return
            tag = response.headers.get("etag", "")
            strong = "" if tag.startswith("W/") else tag  # If-Range takes strong ones only
            validator_file.write_text(strong or response.headers.get("last-modified", ""))
            progress.start(start, total or 0)
            with partial.open("r+b" if partial.exists() else "wb") as out:
                out.truncate(start)
                out.seek(start)
                for chunk in response.iter_raw(_CHUNK):
                    out.write(chunk)
                    progress.advance(len(chunk))
    except _StalePartialError:
        partial.unlink(missing_ok=True)
        validator_file.unlink(missing_ok=True)
        raise
    except httpx.TooManyRedirects as error:
        raise ModelLoadError(f"{model.url}: more than {MAX_REDIRECTS} redirects") from error
    except InvalidArgumentError as error:  # the URL or a redirect the policy refuses
        raise ModelLoadError(f"{model.url} was not fetched: {error}") from error
    except httpx.HTTPError as error:
        raise ModelLoadError(
            f"{model.url} could not be downloaded: {error!r} (what came is kept: applying the "
            "state again resumes)"
        ) from error
    size = partial.stat().st_size
    if total is not None and size != total:
        raise ModelLoadError(
            f"{model.url}: the connection ended after {size} of {total} bytes (what came is "
            "kept: applying the state again resumes)"
        )


class _StalePartialError(ModelLoadError):
    """The bytes kept from an earlier try do not fit the file the server has now."""


def _start_of(response: httpx.Response, offset: int) -> tuple[int, int | None]:
    """Where the body starts in the file and the file's size (None: unknown), or raise."""
    if response.status_code == httpx.codes.PARTIAL_CONTENT:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
        if match is None or int(match[1]) != offset:
            raise ModelLoadError(
                f"{response.url}: a range reply that does not start at byte {offset}: "
                f"{response.headers.get('content-range')!r}"
            )
        return offset, int(match[3])
    if response.status_code == httpx.codes.REQUESTED_RANGE_NOT_SATISFIABLE and offset:
        match = _UNSATISFIED_RANGE.fullmatch(response.headers.get("content-range", ""))
        if match is not None and int(match[1]) == offset:
            return offset, offset
        raise _StalePartialError(
            f"{response.url}: the file is now {match[1] if match else 'of unknown size'} "
            f"bytes, shorter than the {offset} kept from an earlier try: dropped them, "
            "applying the state again starts over"
        )
    if response.status_code != httpx.codes.OK:
        raise ModelLoadError(
            f"{response.url} answered HTTP {response.status_code} {response.reason_phrase}"
        )
    length = response.headers.get("content-length")
    return 0, int(length) if length and length.isdigit() else None


def _check(model: desired_state_pb2.UrlModel, partial: Path) -> None:
    """Remove ``partial`` and raise unless it is a GGUF with the pinned sha256."""
    with partial.open("rb") as handle:
        magic = handle.read(len(GGUF_MAGIC))
    problem = ""
    if magic != GGUF_MAGIC:
        problem = f"is not a GGUF file (it starts with {magic!r})"
    elif model.sha256 and (digest := file_sha256(partial)) != model.sha256.lower():
        problem = f"has sha256 {digest}, not the {model.sha256.lower()} the state pins"
    if problem:
        partial.unlink()
        _validator(partial).unlink(missing_ok=True)
        raise ModelLoadError(f"the file at {model.url} {problem}; nothing of it was kept")
