"""`zerosearch demo` end to end with tiny-random and a miniature world: every stage runs, the report has the
before/after table and its plots, and a rerun reuses the cold start and writes a new run folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from zerosearch.demo import DemoConfig, Stages, _eval_bar, auto_threads, busy_now, next_run_dir, run_demo


def test_auto_threads_leaves_busy_cores_alone() -> None:
    assert auto_threads(2, 0.1) == 2 and auto_threads(2, 0.7) == 1 and auto_threads(2, 12.0) == 1
    assert auto_threads(16, 3.2) == 13


def test_busy_now_counts_runnable_tasks_besides_the_reader(tmp_path: Path) -> None:
    """The instantaneous count, not the lagging average: 3 runnable (one is the reader) -> 2 busy."""
    f = tmp_path / "loadavg"
    f.write_text("1.90 1.20 0.80 3/412 9876\n")
    assert busy_now(str(f), reads=2, interval=0) == 2
    f.write_text("0.10 0.20 0.30 1/412 9876\n")
    assert busy_now(str(f), reads=1) == 0
    assert busy_now(str(tmp_path / "missing")) is None
    f.write_text("garbage\n")
    assert busy_now(str(f), reads=1) is None


def test_run_folders_never_overwrite(tmp_path: Path) -> None:
    assert next_run_dir(tmp_path).name == "run-001"
    (tmp_path / "run-007").mkdir()
    assert next_run_dir(tmp_path).name == "run-008"


def test_stage_eta_leaves_out_a_stage_served_from_the_cache(capsys: pytest.CaptureFixture[str]) -> None:
    clock = [0.0]
    stages = Stages({"a": 0.5, "cached": 0.25, "c": 0.25}, clock=lambda: clock[0])
    stages.start("a", "")
    clock[0] = 600.0  # half the planned work took 10 min ...
    stages.start("cached", "", cached=True)  # ... and this one is a cache hit: 10 min per half leaves 5 for "c"
    clock[0] = 601.0
    stages.start("c", "")
    lines = capsys.readouterr().out.splitlines()
    assert "about 5 min to go" in lines[-3] and "about 5 min to go" in lines[-1]
    clock[0] = 900.0
    assert stages.close() == {"a": 600.0, "cached": 1.0, "c": 299.0}


def test_eval_progress_lines_give_elapsed_and_eta(capsys: pytest.CaptureFixture[str]) -> None:
    assert _eval_bar(False) is None
    show = _eval_bar(True)
    show(4, 12, "direct")  # resumed: 4 already done before this run, so no pace yet
    show(8, 12, "rag")
    first, second = capsys.readouterr().out.splitlines()
    assert "eval direct: 4/12" in first and "to go" not in first
    assert "eval rag: 8/12" in second and "min to go" in second


def test_demo_end_to_end_with_tiny_random(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ZEROSEARCH_CACHE", str(tmp_path / "cache"))
    from zerosearch.data.world import WorldConfig, cached_world

    small = WorldConfig(n_people=12, n_places=6, n_orgs=6, n_works=6, n_questions=40)
    monkeypatch.setattr("zerosearch.data.world.cached_world", lambda cfg=None, world_dir=None: cached_world(small, world_dir))
    cfg = DemoConfig(model="tiny-random", eval_size=3, warmup_examples=4, warmup_steps=1, warmup_batch=2, steps=2,
                     questions_per_step=1, group_size=2, max_tokens=4)
    report = run_demo(cfg, tmp_path / "out", progress=False)
    text = report.read_text()
    assert report.parent.name == "run-001"
    for method in cfg.methods:
        assert f"| {method} |" in text
    for png in ("training.png", "em_before_after.png"):
        assert (report.parent / png).stat().st_size > 1000 and f"({png})" in text
    assert (report.parent / "train" / "final" / "config.json").is_file()
    assert "Wall time per stage" in text
    assert "[viewer.html](viewer.html)" in text and (report.parent / "viewer.html").stat().st_size > 1000
    # RL's own contribution, separate from the cold start's, on the same questions
    assert "## What RL added (search-agent, the same 3 questions" in text and "**RL: after vs cold start**" in text
    assert "| before | cold start | after RL |" in text and "McNemar p" in text
    assert (report.parent / "eval-cold-start" / "predictions.jsonl").is_file()
    # by hops at each stage, with the agent's behaviour
    assert "## By hops (search-agent, real BM25)" in text and "| stage | hops |" in text and "query-copy rate" in text
    assert "| after RL | 1-hop |" in text or "| after RL | 2-hop |" in text
    capsys.readouterr()
    again = run_demo(cfg, tmp_path / "out", progress=False)
    assert again.parent.name == "run-002" and report.read_text() == text
    assert "cold start: reusing" in capsys.readouterr().out


def test_precision_reaches_training_and_the_simulator_only(tmp_path: Path) -> None:
    """--precision bf16 sets the trainer's autocast and the simulator's weights; fp32 keeps the engine's
    device default; the config validates either way."""
    from zerosearch.training.config import TrainConfig
    from zerosearch.demo import grpo_config

    for precision, dtype in (("fp32", "auto"), ("bf16", "bfloat16")):
        cfg = TrainConfig.model_validate(grpo_config(DemoConfig(precision=precision), "tiny-random", tmp_path))
        assert cfg.optim.precision == precision and cfg.engine["dtype"] == dtype
        assert cfg.optim.share_prompts and cfg.optim.reuse_kv_cache and cfg.optim.loss_token_logits  # exact speed options
