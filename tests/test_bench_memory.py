"""bench/memory.py is a script: it parses its flags and imports what its child processes need (the
measurement itself trains SmolLM2 for minutes and is run by hand: docs/results/replication-powered-seed0.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "memory.py"


def test_memory_bench_parses_its_flags() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--steps" in out.stdout and "--one" not in out.stdout  # the child's flag stays hidden
    bad = subprocess.run([sys.executable, str(BENCH), "--steps", "x"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--steps" in bad.stderr
