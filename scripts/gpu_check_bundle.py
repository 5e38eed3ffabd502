"""Gather what `scripts/gpu_check.sh run` needs on a GPU machine that has no network.

Writes into one folder (default `.gpu-check/`, git-ignored):
- `llama_cpp_python.tar.gz`: the llama-cpp-python sdist our agent pins, without what a CUDA
  build of llama-server and the shared libraries never reads (git history, the vendored test
  models, docs, tests, examples and the other GPU backends): 77 MB down to about 6;
- `wheels/`: our runtime dependencies (the core ones and the agent extra's, but llama-cpp-python,
  which is built there) and `gguf`, as binary wheels for that machine's Python;
- `smollm2-shape.gguf`: the packaged SmolLM2's metadata and tensor list (`random_gguf.py`);
- `python-version`: the Python the wheels are for.

Run: `.venv/bin/python scripts/gpu_check_bundle.py [--out DIR] [--python-version 3.12]`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Sequence
from pathlib import Path

from paddler.agent.default_model import default_model_path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_server_build import download_sdist
from random_gguf import write_shape

ROOT = Path(__file__).resolve().parent.parent
# What a carried folder may weigh: the device machine takes 64 MiB with the repository.
LIMIT_BYTES = 58 * 2**20
VENDOR = "vendor/llama.cpp/"
DROPPED = (
    ".git/", "docs/", "examples/", "tests/", "docker/",
    *(VENDOR + d for d in (
        "models/", "docs/", "benches/", "tests/", "media/", ".github/", "examples/", "pocs/",
        "gguf-py/", "conversion/", "tools/ui/tests/", "tools/mtmd/test-",
    )),
    *(VENDOR + "ggml/src/ggml-" + b + "/" for b in (
        "cann", "openvino", "webgpu", "et", "metal", "hexagon", "sycl", "vulkan", "opencl",
        "virtgpu", "hip", "musa", "zdnn", "kompute",
    )),
)  # fmt: skip
# manylinux tags pip may take for the target machine (pip matches each exactly).
PLATFORMS = (
    "manylinux1_x86_64",
    "manylinux2014_x86_64",
    *(f"manylinux_2_{n}_x86_64" for n in (5, 17, 24, 27, 28, 31, 34, 35)),
)


def runtime_requirements(sdist: Path) -> list[str]:
    """The core and agent requirements from pyproject.toml, llama-cpp-python's own from its
    sdist (llama-cpp-python itself is built there), and gguf."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["agent"]]
    gguf = [r for r in project["optional-dependencies"]["dev"] if r.startswith("gguf")]
    with tarfile.open(sdist) as archive:
        info = archive.extractfile(f"{sdist.name.removesuffix('.tar.gz')}/PKG-INFO")
        assert info is not None
        lines = info.read().decode().splitlines()
    llama = [
        line.removeprefix("Requires-Dist: ")
        for line in lines
        if line.startswith("Requires-Dist: ") and "extra ==" not in line
    ]
    return [r for r in wanted if not r.startswith("llama-cpp-python")] + llama + gguf


def download_wheels(out: Path, python_version: str, requirements: list[str]) -> None:
    """Binary wheels of `requirements` and their own, for `python_version`."""
    platforms = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
            "--python-version", python_version, "--implementation", "cp", *platforms,
            "-d", str(out), *requirements,
        ],
        check=True,
    )  # fmt: skip


def trimmed_sdist(sdist: Path, out: Path) -> None:
    """Copy `sdist` to `out` without the members under `DROPPED`."""
    with tarfile.open(sdist) as source, tarfile.open(out, "w:gz") as target:
        for member in source:
            inner = member.name.partition("/")[2]
            if any(inner.startswith(d) or inner + "/" == d for d in DROPPED):
                continue
            target.addfile(member, source.extractfile(member) if member.isfile() else None)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu-check")
    parser.add_argument(
        "--python-version", default="3.12", help="the GPU machine's python3 (default 3.12)"
    )
    args = parser.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    sdist = download_sdist()
    download_wheels(args.out / "wheels", args.python_version, runtime_requirements(sdist))
    trimmed_sdist(sdist, args.out / "llama_cpp_python.tar.gz")
    write_shape(default_model_path(), args.out / "smollm2-shape.gguf")
    (args.out / "python-version").write_text(args.python_version + "\n")
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"{args.out}: {size / 2**20:.1f} MiB", file=sys.stderr)
    if size > LIMIT_BYTES:
        raise SystemExit(f"{args.out} is over {LIMIT_BYTES / 2**20:.0f} MiB: it cannot travel")


if __name__ == "__main__":
    main()
