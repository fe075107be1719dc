"""The committed stubs are exactly what scripts/gen-protos.sh makes from the protos."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMITTED = REPO_ROOT / "src" / "banking" / "grpc" / "gen"


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    generated = tmp_path / "gen"
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "gen-protos.sh"), str(generated)],
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    names = sorted(path.name for path in generated.iterdir())
    assert names == sorted(path.name for path in COMMITTED.iterdir() if path.is_file())
    _, mismatched, errors = filecmp.cmpfiles(generated, COMMITTED, names, shallow=False)
    assert not mismatched and not errors, (
        f"stubs drifted from proto/: {mismatched or errors}; run scripts/gen-protos.sh and commit"
    )
