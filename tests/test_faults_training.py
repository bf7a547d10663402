"""Faults during training, the smallest version of bench/faults.py: a real `zerosearch serve` (BM25 over a
small synthetic world, loopback) killed with SIGKILL during a GRPO run on tiny-random, reached through the
`http` engine.

- restarted within the retry window: no step skipped, no trained step used a failed search, the retries
  are counted, and the run equals an unfaulted one (metrics and weights);
- down longer than the retry window: that step is skipped (not trained on) and the run goes on;
- never back: the run stops after `max_consecutive_failed_steps` skips, with the clear message.

The policy's actions are scripted (search on the first turn, then answer), so every step sends exactly one
search request and the faults fire at fixed points: the scripted backend waits (bounded) for the fault
before the step's search turn. Every wait has a timeout; every server is killed in a `finally`."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from zerosearch.agent.generation import GenOutput
from zerosearch.io import read_jsonl
from zerosearch.training.config import TrainConfig
from zerosearch.training.monitors import TrainingHalted
from zerosearch.training.trainer import Trainer

_spec = importlib.util.spec_from_file_location("bench_faults", Path(__file__).resolve().parents[1] / "bench" / "faults.py")
faults = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(faults)

VOLATILE = ("time_", "tokens_per_s", "engine/")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from zerosearch.data.world import WorldConfig, cached_world

    return cached_world(WorldConfig(n_people=30, n_places=15, n_orgs=15, n_works=15, n_questions=80),
                        tmp_path_factory.mktemp("faults") / "world")


@pytest.fixture
def server(world, tmp_path):
    srv = faults.Server(["--engine", "bm25", "--corpus", str(world / "corpus.jsonl"), "--k", "2"],
                        faults.free_port(), tmp_path / "server", start_timeout=30)
    try:
        srv.start()
        yield srv
    finally:
        srv.close()


def wait_until(cond, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(0.02)


class GatedSearchThenAnswer:
    """Searches on a row's first turn, answers once it has seen an <information> block; before the search
    turn of step s (1-based) it calls `gate(s)`, where a test waits for its fault."""

    def __init__(self, tok: Any, gate=lambda step: None):
        self.tok, self.gate, self.search_turns = tok, gate, 0

    def generate(self, prompts, max_new_tokens, stop_strings, temperature, top_p, seed):
        seen = ["</information>\n\n" in self.tok.decode(p).split("<|im_start|>assistant")[-1] for p in prompts]
        if not any(seen):
            self.search_turns += 1
            self.gate(self.search_turns)
        out = []
        for s in seen:
            ids = self.tok("<answer> Paris </answer>" if s else "<search> the query </search>",
                           add_special_tokens=False).input_ids
            out.append(GenOutput(ids, self.tok.decode(ids), "stop"))
        return out


def cfg(world: Path, url: str, *, steps: int = 2, retries: int = 8, backoff: float = 0.1, **train: Any) -> TrainConfig:
    return TrainConfig.model_validate({
        "model": {"name": "tiny-random", "dtype": "float32"},
        "data": {"train": "world", "dev": None, "world_dir": str(world)},
        "engine": {"name": "http", "endpoint": [url], "k": 2, "retries": retries, "backoff": backoff, "timeout": 5},
        "rollout": {"max_turns": 1, "max_new_tokens_per_turn": 20, "max_obs_tokens": 64, "max_prompt_tokens": 400,
                    "max_total_tokens": 600, "n": 2},
        "optim": {"lr": 1e-3, "mini_batch_size": 4, "micro_batch_size": 2},
        "train": {"steps": steps, "batch_size": 2, "eval_every": 0, "save_every": 0, "samples_per_step": 4, **train},
    })


def fit(config: TrainConfig, run: Path, gate=lambda step: None) -> tuple[Trainer, list[dict]]:
    trainer = Trainer(config, run, progress=False)
    try:
        trainer.backend = GatedSearchThenAnswer(trainer.tok, gate)
        try:
            trainer.fit()
        finally:
            rows = read_jsonl(run / "metrics.jsonl") if (run / "metrics.jsonl").exists() else []
    finally:
        trainer.close()
    return trainer, rows


@pytest.mark.timeout(60)
def test_a_server_restarted_within_the_retry_window_loses_nothing(world, server, tmp_path):
    # Requests: 1 = the start-up check, 2 = step 1's search; killed after 2; step 2's first attempt is dropped,
    # the server restarted 0.2 s later while the search is being retried (window 0.1 x (2**8 - 1) = 25.5 s).
    watcher = faults.Watcher(server, [2], pause=0.2, settle=0.1, down_timeout=30)
    watcher.start()
    try:
        faulted, rows = fit(cfg(world, server.url), tmp_path / "faulted",
                            gate=lambda s: s == 2 and wait_until(lambda: watcher.base >= 2, 20, "the kill"))
        wait_until(lambda: watcher.faults or watcher.error, 30, "the restart")
    finally:
        watcher.stop.set()
        watcher.join(timeout=30)
    assert watcher.error is None and len(watcher.faults) == 1 and watcher.faults[0]["after_requests"] == 2
    assert watcher.faults[0]["client_came"]  # step 2's search met the dead server
    assert [(r["step"], r["skipped"], r["failed_searches"]) for r in rows] == [(1, 0, 0), (2, 0, 0)]
    assert all("pg_loss" in r and r["engine/errors"] == 0 for r in rows)
    assert rows[0]["engine/retries"] == 0 and rows[1]["engine/retries"] >= 1  # the restart was retried through
    assert (tmp_path / "faulted" / "final" / "config.json").is_file()

    # The same run with nothing killed: the same steps, documents and weights.
    clean, clean_rows = fit(cfg(world, server.url), tmp_path / "clean")
    strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rs]
    assert strip(rows) == strip(clean_rows)
    assert read_jsonl(tmp_path / "faulted" / "samples.jsonl") == read_jsonl(tmp_path / "clean" / "samples.jsonl")
    a, b = faulted.policy.state_dict(), clean.policy.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.timeout(60)
def test_an_outage_longer_than_the_retry_window_skips_that_step_and_the_run_goes_on(world, server, tmp_path):
    run = tmp_path / "run"
    # Killed after step 1's search; kept down until the trainer has given up on step 2's (window 0.1 + 0.2 s)
    # and logged the step as skipped; step 3 waits for the restart.
    watcher = faults.Watcher(server, [2], until_skipped=run / "metrics.jsonl", settle=0.1, down_timeout=30)
    watcher.start()

    def gate(step: int) -> None:
        if step == 2:
            wait_until(lambda: watcher.base >= 2, 20, "the kill")
        if step == 3:
            wait_until(lambda: watcher.faults or watcher.error, 30, "the restart")

    try:
        _, rows = fit(cfg(world, server.url, steps=3, retries=2, backoff=0.1), run, gate)
    finally:
        watcher.stop.set()
        watcher.join(timeout=30)
    assert watcher.error is None and watcher.faults[0]["skipped_step"] == 2
    assert [(r["step"], r["skipped"]) for r in rows] == [(1, 0), (2, 1), (3, 0)]
    assert "SearchError: search failed after 3 attempts" in rows[1]["skip_reason"] and "pg_loss" not in rows[1]
    assert all(r["failed_searches"] == 0 and "pg_loss" in r for r in (rows[0], rows[2]))
    assert rows[1]["engine/errors"] == 1 and rows[1]["engine/retries"] == 2
    assert (run / "final" / "config.json").is_file()


@pytest.mark.timeout(60)
def test_a_server_that_never_comes_back_stops_the_run_with_a_clear_message(world, server, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingHalted, match=r"stopped at step 3: 2 steps in a row skipped, the last because the "
                                             r"engine failed: SearchError: search failed after 2 attempts.*"
                                             r"last good checkpoint: .*step-000001"):
        fit(cfg(world, server.url, steps=4, retries=1, backoff=0.1, max_consecutive_failed_steps=2, save_every=1), run,
            gate=lambda s: s == 2 and server.kill())
    rows = read_jsonl(run / "metrics.jsonl")
    assert [(r["step"], r["skipped"]) for r in rows] == [(1, 0), (2, 1), (3, 1)] and rows[-1]["halted"] == 1
    assert rows[0]["failed_searches"] == 0 and "pg_loss" in rows[0]
