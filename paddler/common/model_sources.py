"""Which model sources a cluster may be told to load: an allow-list of local folders and
Hugging Face owners (empty: any)."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from paddler.common.errors import InvalidArgumentError
from paddler.v1 import desired_state_pb2


@dataclass(frozen=True)
class ModelSourcePolicy:
    """``local_roots``: folders a ``local_path`` must lie in; ``hf_owners``: Hugging Face
    owners a repository must belong to. An empty list allows every source of its kind (the
    admin key is then the only gate)."""

    local_roots: tuple[str, ...] = ()
    hf_owners: tuple[str, ...] = ()

    def check(self, model: desired_state_pb2.ModelSource) -> None:
        """InvalidArgumentError when ``model`` is outside the allow-list."""
        source = model.WhichOneof("source")
        if source == "local_path" and self.local_roots:
            path = posixpath.normpath(model.local_path)
            if not any(_within(path, root) for root in self.local_roots):
                raise InvalidArgumentError(
                    "state.model.local_path",
                    "must lie in an allowed model folder (--allowed-model-root): "
                    + ", ".join(self.local_roots),
                )
        if source == "hugging_face" and self.hf_owners:
            owner = model.hugging_face.repo.partition("/")[0]
            if owner not in self.hf_owners:
                raise InvalidArgumentError(
                    "state.model.hugging_face.repo",
                    "must belong to an allowed Hugging Face owner (--allowed-hf-owner): "
                    + ", ".join(self.hf_owners),
                )


def _within(path: str, root: str) -> bool:
    """Whether the normalized absolute ``path`` lies in ``root`` (no ``..`` way out)."""
    base = posixpath.normpath(root)
    return path == base or path.startswith(base.rstrip("/") + "/")
