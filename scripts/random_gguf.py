"""A GGUF with a real model's tokenizer and shape but random weights, for speed checks.

Random weights give meaningless text at the real model's cost per token, so a machine that
cannot receive the model (the GPU check's: nothing over ~60 MB travels there) can still measure
how fast it serves. Two steps:

- `shape MODEL OUT`: write MODEL's metadata (architecture, tokenizer, chat template) and its
  tensor list (names, shapes, types) into a small GGUF with no tensors (~2 MB for SmolLM2).
- `write SHAPE OUT`: write a full GGUF from that shape file: every tensor in its type, with
  random quantized blocks (a fixed small scale and random quants) and norms of ones.

Run: `.venv/bin/python scripts/random_gguf.py shape|write IN OUT`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gguf
import numpy as np

TENSORS_KEY = "paddler.random_gguf.tensors"
# Bytes of float16 scales (and mins) at the start of each block of these types; the rest of a
# block is quants, any bit pattern of which is a valid weight.
BLOCK_SCALES = {
    gguf.GGMLQuantizationType.Q8_0: 1,
    gguf.GGMLQuantizationType.Q4_0: 1,
    gguf.GGMLQuantizationType.Q4_1: 2,
}
SCALE = 0.002


def _copy_fields(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> None:
    """Every key-value of `reader` but the file's own header fields and the architecture."""
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in (
            gguf.Keys.General.ARCHITECTURE,
            TENSORS_KEY,
        ):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)


def _architecture(reader: gguf.GGUFReader) -> str:
    field = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    if field is None:
        raise SystemExit("no general.architecture in the model")
    return str(field.contents())


def write_shape(model: Path, out: Path) -> None:
    """Write `model`'s metadata and tensor list, without tensor data, to `out`."""
    reader = gguf.GGUFReader(model)
    writer = gguf.GGUFWriter(out, _architecture(reader))
    _copy_fields(reader, writer)
    tensors = [
        {"name": t.name, "shape": [int(n) for n in t.shape], "type": t.tensor_type.name}
        for t in reader.tensors
    ]
    writer.add_string(TENSORS_KEY, json.dumps(tensors))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _random_tensor(
    rng: np.random.Generator, name: str, shape: list[int], kind: gguf.GGMLQuantizationType
) -> np.ndarray[Any, Any]:
    """Data for one tensor of GGML `shape` (innermost dimension first, as read) and `kind`.

    Quantized tensors are their bytes, one row of blocks per row, as `GGUFWriter` takes them.
    """
    dims = shape[::-1]
    if kind == gguf.GGMLQuantizationType.F32 and name.endswith("norm.weight"):
        return np.ones(dims, dtype=np.float32)
    if kind in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        return rng.normal(0, SCALE, size=dims).astype(
            np.float32 if kind == gguf.GGMLQuantizationType.F32 else np.float16
        )
    if kind not in BLOCK_SCALES:
        raise SystemExit(f"{name}: random blocks of type {kind.name} are not written here")
    block_size, block_bytes = gguf.GGML_QUANT_SIZES[kind]
    blocks = int(np.prod(dims, dtype=np.int64)) // block_size
    data = rng.integers(0, 256, size=(blocks, block_bytes), dtype=np.uint8)
    scales = np.full((blocks, BLOCK_SCALES[kind]), SCALE, dtype=np.float16)
    if kind == gguf.GGMLQuantizationType.Q4_1:
        scales[:, 1] = -8 * SCALE  # the min: quants 0..15 centred on zero
    data[:, : 2 * BLOCK_SCALES[kind]] = scales.view(np.uint8)
    return data.reshape(*dims[:-1], dims[-1] // block_size * block_bytes)


def write_random(shape_file: Path, out: Path, seed: int = 0) -> None:
    """Write a GGUF with `shape_file`'s metadata and tensors, random weights, to `out`."""
    reader = gguf.GGUFReader(shape_file)
    field = reader.get_field(TENSORS_KEY)
    if field is None:
        raise SystemExit(f"{shape_file} is not a shape file (no {TENSORS_KEY})")
    writer = gguf.GGUFWriter(out, _architecture(reader))
    _copy_fields(reader, writer)
    rng = np.random.default_rng(seed)
    for tensor in json.loads(str(field.contents())):
        kind = gguf.GGMLQuantizationType[tensor["type"]]
        data = _random_tensor(rng, tensor["name"], tensor["shape"], kind)
        writer.add_tensor(tensor["name"], data, raw_dtype=kind if kind in BLOCK_SCALES else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("step", choices=["shape", "write"])
    parser.add_argument("source", type=Path, help="a model (shape) or a shape file (write)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.step == "shape":
        write_shape(args.source, args.out)
    else:
        write_random(args.source, args.out, args.seed)
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.1f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
