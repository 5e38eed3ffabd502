"""generated/ must be exactly what scripts/generate_protos.py writes from protos/."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _files(root: Path) -> set[str]:
    return {
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_protos.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    committed = ROOT / "generated"
    assert _files(tmp_path) == _files(committed), "run scripts/generate_protos.py"
    drifted = [
        name
        for name in sorted(_files(committed))
        if not filecmp.cmp(tmp_path / name, committed / name, shallow=False)
    ]
    assert drifted == [], f"generated code is stale, run scripts/generate_protos.py: {drifted}"
