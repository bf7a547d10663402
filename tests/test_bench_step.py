"""bench/step.py as a smoke run (tiny-random policy and simulator, a miniature world): every path runs the
same step, the JSON line has the split, the ratios, the same-results check (and bf16's distance from fp32
where bf16 is native), and the CPU peak and stats helpers read what they should."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "step.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("step_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_step_bench_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ZEROSEARCH_CACHE", str(tmp_path / "cache"))
    from zerosearch.data.world import WorldConfig, cached_world

    small = WorldConfig(n_people=12, n_places=6, n_orgs=6, n_works=6, n_questions=40)
    monkeypatch.setattr("zerosearch.data.world.cached_world", lambda cfg=None, world_dir=None: cached_world(small, world_dir))
    bench = load_bench()
    monkeypatch.setattr(sys, "argv", ["step.py", "--policy", "tiny-random", "--model", "tiny-random", "--questions", "1",
                                      "--group", "2", "--reps", "2", "--baseline-threads", "1"])
    bench.main()
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    paths = ["baseline", "optimised"] + (["bf16"] if out["bf16_native"] else [])
    assert out["bench"] == "step" and out["shape"]["trajectories"] == 2 and len(out["load_1min"]) == 2 * len(paths)
    assert list(out["seconds"]) == paths
    for path in ("baseline", "optimised"):
        assert set(bench.PARTS) <= set(out["seconds"][path]) and out["seconds"][path]["step"] > 0
    assert out["speedup_step"] > 0
    # same thread count, same code for generation: the same samples, the same losses to float noise
    assert all(c["same_tokens"] for c in out["same_results"])
    assert all(c["old_logp_max_abs_diff"] < 1e-3 for c in out["same_results"])
    assert all(v < 1e-3 for c in out["same_results"] for v in c["loss_abs_diff"].values())
    # the optimised path never runs the old-log-prob forward: fewer log-prob tokens than the baseline
    assert out["tokens/optimised"]["logprobs"]["padded"] < out["tokens/baseline"]["logprobs"]["padded"]
    # and its generation feeds each turn only its new tokens (the KV cache holds the rest)
    assert out["kv_cache/baseline"] is None and out["kv_cache/optimised"]["reused_prompt_tokens"] > 0
    assert out["tokens/optimised"]["policy_generation"]["padded"] < out["tokens/baseline"]["policy_generation"]["padded"]
    if out["bf16_native"]:  # bf16 runs the optimised path's work in bf16: its own ratio and its distance from fp32
        assert out["speedup_step/bf16"] > 0 and set(out["speedup/bf16"]) == set(bench.PARTS)
        for c in out["bf16_vs_fp32"]:
            assert 0 < c["old_logp_max_abs_diff_vs_fp32"] < 0.5 and c["old_logp_mean_abs_diff_vs_fp32"] < 0.1
            assert c["same_trajectories"].endswith("/2")
    else:
        assert "bf16_vs_fp32" not in out


def test_paths_must_start_with_the_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load_bench()
    monkeypatch.setattr(sys, "argv", ["step.py", "--paths", "optimised,baseline", "--policy", "tiny-random"])
    monkeypatch.setattr(bench, "cpu_peak", lambda: {"bf16_native": True, "peak_gflops_fp32": 1.0})
    monkeypatch.setattr(bench, "bandwidth_gbs", lambda: 1.0)
    monkeypatch.setattr("zerosearch.data.world.cached_world", lambda cfg=None, world_dir=None: Path("."))
    with pytest.raises(SystemExit, match="baseline first"):
        bench.main()


def test_cpu_peak_reads_lscpu(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load_bench()

    class Done:
        stdout = ("CPU(s):   2\nVendor ID:   AuthenticAMD\nCPU family:   25\nBogoMIPS:   5192.30\n"
                  "Flags:   fpu avx2 fma avx512f avx512_bf16\n")

    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: Done())
    peak = bench.cpu_peak()
    # 2 cores x 2.596 GHz x 16 FMA lanes (Zen 4: AVX-512 on two 256-bit units) x 2 FLOPs
    assert peak["peak_gflops_fp32"] == pytest.approx(2 * 2.596 * 16 * 2, abs=0.1) and peak["bf16_native"]
