"""Build `llama-server` from the llama.cpp vendored in the llama-cpp-python sdist, once."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "paddler" / f"llama-server-{LLAMA_CPP_PYTHON_VERSION}"
CMAKE_OPTIONS = (
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary, safe to copy out of the build tree
)


def _run(command: list[str], cwd: Path | None = None) -> None:
    """Run a build step; its output goes to stderr, keeping stdout for results."""
    print("+", " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, cwd=cwd, check=True, stdout=sys.stderr)


def download_sdist(cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """Fetch the sdist from PyPI into `cache_dir` (pip skips it when already there)."""
    download_dir = cache_dir / "sdist"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
            "-d",
            str(download_dir),
        ]
    )
    archives = sorted(download_dir.glob(f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"))
    if not archives:
        raise FileNotFoundError(
            f"no llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sdist in {download_dir}"
        )
    return archives[0]


def _extract(archive: Path, cache_dir: Path) -> Path:
    """Unpack the sdist and return its vendored llama.cpp directory."""
    source_dir = cache_dir / "src"
    if source_dir.exists():
        shutil.rmtree(source_dir)
    source_dir.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(source_dir, filter="data")
    (top,) = source_dir.iterdir()
    return top / "vendor" / "llama.cpp"


def ensure_llama_server(cache_dir: Path = DEFAULT_CACHE_DIR, jobs: int = 2) -> Path:
    """Return the cached `llama-server` binary, building it first if it is missing."""
    binary = cache_dir / "llama-server"
    if binary.is_file():
        return binary
    cache_dir.mkdir(parents=True, exist_ok=True)
    llama_cpp = _extract(download_sdist(cache_dir), cache_dir)
    _run(["cmake", "-B", "build", *CMAKE_OPTIONS], cwd=llama_cpp)
    _run(["cmake", "--build", "build", f"-j{jobs}", "--target", "llama-server"], cwd=llama_cpp)
    built = llama_cpp / "build" / "bin" / "llama-server"
    shutil.copy2(built, binary)
    shutil.rmtree(cache_dir / "src")
    return binary


if __name__ == "__main__":
    print(ensure_llama_server())
