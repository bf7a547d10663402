"""bench/load.py as a smoke run on loopback (a small burst, a tight --max-pending): the JSON line is complete,
a burst within the limits has no errors, and an overloaded server sheds the excess as 503 + Retry-After
with no other error. Bounded: ~100 requests, each phase's server a subprocess that the bench stops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "load.py"


@pytest.mark.timeout(600)
def test_load_bench_smoke(tmp_path: Path) -> None:
    env = {**os.environ, "ZEROSEARCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCH), "--requests", "60", "--baseline-requests", "10",
                           "--max-pending", "2"], capture_output=True, text=True, timeout=540, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["bench"] == "load" and out["engine"] == "bm25"
    base, burst, over = out["baseline"], out["burst"], out["overload"]
    assert base["requests"] == 10 and base["errors"] == 0 and base["statuses"] == {"200": 10}
    assert burst["requests"] == 60 and burst["errors"] == 0 and burst["statuses"] == {"200": 60}
    assert burst["client_p50_ms"] <= burst["client_p99_ms"] and burst["queue_wait_ms"] is not None
    assert over["errors"] == 0 and sum(over["statuses"].values()) == 60
    assert over["statuses"].get("503", 0) > 0 and over["retry_after_present"] is True  # the excess was shed
    assert over["server_overloaded"] == over["statuses"]["503"]  # and the server counted each one
