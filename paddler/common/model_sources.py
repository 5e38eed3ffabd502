"""Which model sources a cluster may be told to load: an allow-list of local folders, Hugging
Face owners and URL hosts (empty: any), and whether plain-http URLs may be fetched."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from urllib.parse import urlsplit

from paddler.common.errors import InvalidArgumentError
from paddler.v1 import desired_state_pb2


@dataclass(frozen=True)
class ModelSourcePolicy:
    """``local_roots``: folders a ``local_path`` must lie in; ``hf_owners``: Hugging Face
    owners a repository must belong to; ``url_hosts``: hosts a model URL (and each redirect)
    may name. An empty list allows every source of its kind (the admin key is then the only
    gate). ``allow_http``: plain-http URLs may be fetched (refused by default: anyone on the
    path could change the bytes)."""

    local_roots: tuple[str, ...] = ()
    hf_owners: tuple[str, ...] = ()
    url_hosts: tuple[str, ...] = ()
    allow_http: bool = False

    def check(self, model: desired_state_pb2.ModelSource, field: str = "state.model") -> None:
        """InvalidArgumentError (naming ``field``'s part) when ``model`` is outside the
        allow-list."""
        source = model.WhichOneof("source")
        if source == "local_path" and self.local_roots:
            path = posixpath.normpath(model.local_path)
            if not any(_within(path, root) for root in self.local_roots):
                raise InvalidArgumentError(
                    f"{field}.local_path",
                    "must lie in an allowed model folder (--allowed-model-root): "
                    + ", ".join(self.local_roots),
                )
        if source == "hugging_face" and self.hf_owners:
            owner = model.hugging_face.repo.partition("/")[0]
            if owner not in self.hf_owners:
                raise InvalidArgumentError(
                    f"{field}.hugging_face.repo",
                    "must belong to an allowed Hugging Face owner (--allowed-hf-owner): "
                    + ", ".join(self.hf_owners),
                )
        if source == "url":
            self.check_url(model.url.url, f"{field}.url.url")

    def check_url(self, url: str, field: str) -> None:
        """InvalidArgumentError naming ``field`` when ``url`` (a model URL or a redirect on the
        way to it) has a scheme or a host this policy refuses."""
        parts = urlsplit(url)
        if parts.scheme == "http" and not self.allow_http:
            raise InvalidArgumentError(
                field,
                f"plain-http model URLs are refused (anyone on the path could change the "
                f"file): use https, or allow http with --allow-http-models; got {url!r}",
            )
        if parts.scheme not in ("http", "https"):
            raise InvalidArgumentError(field, f"must be an https:// URL, got {url!r}")
        host = (parts.hostname or "").lower()
        if self.url_hosts and host not in self.url_hosts:
            raise InvalidArgumentError(
                field,
                f"the host {host!r} is not an allowed model host (--allowed-url-host): "
                + ", ".join(self.url_hosts),
            )


def _within(path: str, root: str) -> bool:
    """Whether the normalized absolute ``path`` lies in ``root`` (no ``..`` way out)."""
    base = posixpath.normpath(root)
    return path == base or path.startswith(base.rstrip("/") + "/")
