"""A Hugging Face file downloaded into huggingface-hub's own cache, resumably.

``hf_hub_download`` deletes its partial file on any failure, so a download stopped half-way (a
newer desired state, a crash, a lost connection) would start from zero. Here the bytes go to a
partial file of our own beside the cache's blob, appended to with HTTP Range requests until
whole, then moved into place with the snapshot link and the revision's ref, the layout
``hf_hub_download(local_files_only=True)`` reads (and HF_HUB_OFFLINE serves from later).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from filelock import FileLock
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.file_download import http_get, repo_folder_name
from huggingface_hub.utils._headers import build_hf_headers

PARTIAL_SUFFIX = ".paddler-partial"


def download_into_cache(repo: str, file: str, revision: str, progress: type[Any]) -> None:
    """Put ``repo``'s ``file`` at ``revision`` into the cache, resuming a partial download
    (blocking). ``progress`` is a tqdm class; an exception it raises stops the download and
    keeps what came so far."""
    metadata = get_hf_file_metadata(hf_hub_url(repo, file, revision=revision))
    if metadata.etag is None or metadata.commit_hash is None:
        raise OSError(f"the Hub gave no ETag or commit for {repo}/{file}@{revision}")
    storage = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo, repo_type="model")
    blob = storage / "blobs" / metadata.etag
    blob.parent.mkdir(parents=True, exist_ok=True)
    partial = blob.with_name(blob.name + PARTIAL_SUFFIX)
    with FileLock(str(partial) + ".lock"):  # agents that share the cache take turns
        if not blob.exists():
            with partial.open("ab") as out:
                if out.tell() != metadata.size:
                    http_get(
                        metadata.location,
                        out,
                        resume_size=out.tell(),
                        headers=build_hf_headers(),
                        expected_size=metadata.size,
                        tqdm_class=progress,
                    )
            if metadata.size is not None and partial.stat().st_size != metadata.size:
                raise OSError(
                    f"{repo}/{file}: got {partial.stat().st_size} bytes, expected {metadata.size}"
                )
            partial.replace(blob)
        pointer = storage / "snapshots" / metadata.commit_hash / file
        if not pointer.is_symlink():
            pointer.parent.mkdir(parents=True, exist_ok=True)
            pointer.symlink_to(os.path.relpath(blob, pointer.parent))
        if revision != metadata.commit_hash:
            ref = storage / "refs" / revision
            ref.parent.mkdir(parents=True, exist_ok=True)
            written = ref.with_name(f"{ref.name}.{os.getpid()}.tmp")
            written.write_text(metadata.commit_hash)
            written.replace(ref)
