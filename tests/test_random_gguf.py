"""`scripts/random_gguf.py` (the GPU check's model): a shape file keeps the packaged model's
metadata and tensor list; the GGUF written from it has the same tensors with random weights,
loads in a real agent and generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gguf

from paddler.agent.default_model import default_model_path
from tests.client import generate, prompt_request
from tests.cluster import cluster, to_inference

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "random_gguf.py"


def _run(*args: str) -> None:
    subprocess.run([sys.executable, str(SCRIPT), *args], check=True, timeout=120)


def test_a_random_model_in_smollm2s_shape_loads_and_generates(tmp_path: Path) -> None:
    source = default_model_path()
    shape, model = tmp_path / "shape.gguf", tmp_path / "random.gguf"
    _run("shape", str(source), str(shape))
    assert shape.stat().st_size < source.stat().st_size // 20  # metadata only: it travels
    _run("write", str(shape), str(model))
    original, written = gguf.GGUFReader(source), gguf.GGUFReader(model)
    assert [(t.name, t.shape.tolist(), t.tensor_type) for t in written.tensors] == [
        (t.name, t.shape.tolist(), t.tensor_type) for t in original.tensors
    ]
    for key in ("tokenizer.ggml.tokens", "tokenizer.chat_template", "llama.block_count"):
        assert written.fields[key].contents() == original.fields[key].contents()
    assert not any(name.startswith("paddler.") for name in written.fields)
    changed = sum(
        not (a.data == b.data).all() for a, b in zip(original.tensors, written.tensors, strict=True)
    )
    assert changed > len(original.tensors) // 2  # the weights are not the model's
    with cluster() as c:
        c.start_agent("random", "--model", str(model), "--slots", "1", "--context-size", "256")
        reply = generate(c.inference, to_inference(prompt_request("Once upon", max_tokens=8)))
    assert 1 <= reply.summary.usage.completion_tokens <= 8
