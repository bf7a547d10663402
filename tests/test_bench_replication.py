"""bench/replication.py as a smoke run (tiny-random, a miniature world, one GRPO step per arm): every arm trains
and is evaluated, the per-seed table, plot and JSON are written, a rerun resumes instead of retraining, and a
rerun with other settings in the same folder is refused."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "replication.py"


def test_replication_bench_smoke_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ZEROSEARCH_CACHE", str(tmp_path / "cache"))
    from zerosearch.data.world import WorldConfig, cached_world

    small = WorldConfig(n_people=12, n_places=6, n_orgs=6, n_works=6, n_questions=40)
    monkeypatch.setattr("zerosearch.data.world.cached_world", lambda cfg=None, world_dir=None: cached_world(small, world_dir))
    spec = importlib.util.spec_from_file_location("replication_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["replication.py", "--model", "tiny-random", "--steps", "1", "--questions-per-step", "1", "--group-size", "2",
            "--eval-size", "3", "--warmup-examples", "4", "--warmup-steps", "1", "--warmup-batch", "2", "--max-tokens", "4",
            "--seed", "1", "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results")]
    monkeypatch.setattr(sys, "argv", argv)

    # Two arms trained alone (as a parallel invocation would): no evaluation, no table.
    monkeypatch.setattr(sys, "argv", [*argv, "--arms", "self,real-bm25", "--train-only"])
    bench.main()
    first = capsys.readouterr().out
    assert "== train self" in first and "== train real-bm25" in first and "== eval" not in first
    assert json.loads(first.strip().splitlines()[-1])["trained"] == ["self", "real-bm25"]
    assert not (tmp_path / "results").exists()

    monkeypatch.setattr(sys, "argv", argv)
    bench.main()  # trains the other arms only, then evaluates every policy
    out = capsys.readouterr().out
    figures = json.loads(out.strip().splitlines()[-1])
    policies = ["cold start", *bench.ARMS]
    assert figures["seed"] == 1 and figures["eval_questions"] == 3
    assert all((f"== train {arm}" in out) == (arm not in ("self", "real-bm25")) for arm in bench.ARMS)
    assert out.index("== eval cold start") > max(out.index(f"== eval {arm}") for arm in bench.ARMS)
    table = (tmp_path / "results" / "replication-powered-seed1.md").read_text()
    assert all(f"| {p} |" in table for p in policies) and "(replication-powered-seed1.png)" in table
    assert "McNemar p" in table and "**Power.**" in table and "| sim-curriculum vs sim-fixed |" in table
    assert "| cold start | 1 |" in table or "| cold start | 2 |" in table  # the per-hop table
    assert (tmp_path / "results" / "replication-powered-seed1.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "results" / "replication-powered-seed1.json").read_text())
    assert saved["figures"] == figures
    assert sorted(saved["per_question_em"]) == sorted(policies)
    assert all(len(per_q) == 3 for per_q in saved["per_question_em"].values())
    for arm in bench.ARMS:  # the paired statistics, from the per-question EM saved beside them
        v, start, now = saved["results"][arm], saved["per_question_em"]["cold start"], saved["per_question_em"][arm]
        assert v["gained"] == sum(now[q] > start[q] for q in start) and v["lost"] == sum(now[q] < start[q] for q in start)
        assert 0 < v["p"] <= 1 and v["ci"][0] <= v["delta"] <= v["ci"][1]
        assert figures[f"p_mcnemar_vs_cold_start/{arm}"] == round(v["p"], 4)
    n = len(bench.ARMS)  # every pair of arms is compared
    assert set(saved["by_hop"]) == set(policies) and len(saved["between"]) == n * (n - 1) // 2

    bench.main()  # every arm has its final policy: nothing is trained again, and the numbers are the same
    again = capsys.readouterr().out
    assert "== train" not in again
    assert json.loads((tmp_path / "results" / "replication-powered-seed1.json").read_text())["results"] == saved["results"]

    monkeypatch.setattr(sys, "argv", [*argv, "--steps", "2"])  # other settings, same runs folder: refused
    with pytest.raises(SystemExit, match="trained under other settings"):
        bench.main()
