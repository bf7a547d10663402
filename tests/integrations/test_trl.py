"""zerosearch inside trl.GRPOTrainer, end to end on the CPU (`make test-trl`; skipped without TRL).

One tiny run (tiny-random policy, the synthetic world, the real simulated engine, 2 rollouts) is shared
by the first tests; then the same run under `accelerate launch --num_processes 2` (DDP over gloo); then
zerosearch's GRPO loss against TRL's on one fixed batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.trl
trl = pytest.importorskip("trl", reason="TRL is not installed (pip install 'zerosearch[trl]'; make test-trl)")
torch = pytest.importorskip("torch")

from trl_doubles import ROOT, build, sampled_mask, tiny_config  # noqa: E402

from zerosearch.curriculum import Curriculum  # noqa: E402
from zerosearch.engines.base import format_documents  # noqa: E402
from zerosearch.prompts import FORCE_ANSWER, INFORMATION, INVALID_ACTION  # noqa: E402
from zerosearch.reward import f1_reward  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.set_num_threads(1)
    cfg = tiny_config()
    out = tmp_path_factory.mktemp("trl-run")
    trainer, engine = build(cfg, out)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    engine.close()
    return {"cfg": cfg, "trainer": trainer, "engine": engine, "rollout": trainer.zerosearch_rollout,
            "before": before, "after": after, "out": out}


def test_env_mask_is_zero_exactly_on_inserted_spans(run: dict[str, Any]) -> None:
    ro, tok = run["rollout"], run["trainer"].processing_class
    searched = 0
    for out, trajs, backend in zip(ro.outputs, ro.trajectories, ro.backends):
        assert len(out["completion_ids"]) == len(trajs) == 4  # one completion per prompt, TRL's order
        for ids, mask, prompt_ids, t in zip(out["completion_ids"], out["env_mask"], out["prompt_ids"], trajs):
            assert len(mask) == len(ids) and mask == t.info_mask
            # 1 on every token a backend returned for this row, 0 elsewhere: rebuilt from the backend's record
            assert mask == sampled_mask(prompt_ids, ids, backend.calls)
            # the 0-spans decode to exactly what the rollout inserted (one search turn, then the forced answer)
            inserted = tok.decode([i for i, m in zip(ids, mask) if m == 0])
            if t.end == "answer" and t.turns == 1:
                want = ""
            else:
                first = INFORMATION.format(documents=format_documents(t.documents[0])) if t.searches else INVALID_ACTION
                want = first + FORCE_ANSWER
            assert inserted == want
            assert sum(t.truncation.values()) == 0  # nothing cut: the check above covers every token
            searched += t.searches
    assert searched >= 2  # the inserted spans were exercised (the scripted half searches)


def test_reward_column_is_zerosearch_f1_of_the_policy_text(run: dict[str, Any]) -> None:
    trainer, ro = run["trainer"], run["rollout"]
    # TRL's reward column for the last generation batch (its deque keeps one batch), and every step's mean
    logged = list(trainer._logs["rewards"]["zerosearch_f1"])
    assert logged == pytest.approx([t.reward for t in ro.trajectories[-1]], abs=1e-7)
    means = [row["rewards/zerosearch_f1/mean"] for row in trainer.state.log_history if "loss" in row]
    assert means == pytest.approx([sum(t.reward for t in trajs) / len(trajs) for trajs in ro.trajectories])
    scripted = [t for trajs in ro.trajectories for t in trajs if t.searches]
    assert scripted and all(t.reward == f1_reward(f"<answer> {t.golden_answers[0]} </answer>", t.golden_answers)
                            == 1.0 for t in scripted)
    assert any(t.reward < 1.0 for trajs in ro.trajectories for t in trajs)  # groups have variance


def test_noise_prob_reaching_the_engine_follows_the_curriculum(run: dict[str, Any]) -> None:
    cfg, ro = run["cfg"], run["rollout"]
    c = cfg.curriculum
    curve = Curriculum(c.p_start, c.p_end, cfg.train.steps, c.base)
    # the global_step TRL's rollout sees: optimizer steps done (1 per rollout here), max_steps = 2
    assert ro.steps_seen == [(0, 2), (1, 2)]
    for i, calls in enumerate(ro.engine_calls, start=1):
        sent = {r.noise_prob for call in calls for r in call}
        assert sent == {curve.p(i)}, f"rollout {i}: {sent}"
    assert [h["noise_prob"] for h in ro.history] == pytest.approx([curve.p(1), curve.p(2)])
    assert curve.p(1) < curve.p(2) == c.p_end
    # every query carried its own row's question and gold answers
    golds = {r.question: r.golden_answers for r in ro.by_prompt.values()}
    for calls in ro.engine_calls:
        for r in (r for call in calls for r in call):
            assert r.golden_answers == golds[r.question] and r.query == r.question


def test_parameters_move_because_of_the_gradient(run: dict[str, Any]) -> None:
    trainer, before, after = run["trainer"], run["before"], run["after"]
    assert trainer.args.weight_decay == 0.0 and trainer.args.beta == 0.0 and trainer.args.entropy_coef == 0.0
    norms = [row["grad_norm"] for row in trainer.state.log_history if "grad_norm" in row]
    assert len(norms) == 2 and all(n > 0 for n in norms)
    moved = [n for n in before if not torch.equal(before[n], after[n])]
    # AdamW with weight decay 0 leaves a parameter unchanged iff all its gradients were 0
    assert len(moved) >= len(before) // 2, f"only {moved} moved"


def test_rollout_stats_reach_the_logs(run: dict[str, Any]) -> None:
    trainer, out = run["trainer"], run["out"]
    rows = [row for row in trainer.state.log_history if "loss" in row]
    assert len(rows) == 2
    for row in rows:
        for key in ("turns", "searches", "noise_prob", "useful_draws", "noisy_draws", "engine_fallbacks",
                    "truncated_tokens", "engine/leak_flagged", "engine/queries", "em", "cover_em", "valid_format"):
            assert f"zerosearch/{key}" in row, key
    assert rows[0]["zerosearch/noise_prob"] < rows[1]["zerosearch/noise_prob"]
    engine_queries = sum(len(r) for calls in run["rollout"].engine_calls for r in calls)
    assert rows[-1]["zerosearch/engine/queries"] == engine_queries  # cumulative counter of the real engine
    searches = [sum(t.searches for t in trajs) for trajs in run["rollout"].trajectories]
    assert [row["zerosearch/useful_draws"] + row["zerosearch/noisy_draws"] for row in rows] == searches
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [1, 2]


@pytest.mark.timeout(1200)
def test_two_processes_ddp_over_gloo(tmp_path: Path) -> None:
    """The same run under `accelerate launch --num_processes 2 --cpu`: the simulated engine in every process,
    groups split across ranks, DDP keeps the replicas identical."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(Path(__file__).with_name("trl_ddp_run.py")),
           str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1100)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert all(r["engine_queries"] > 0 for r in ranks)  # each process queried its own simulated engine
    assert ranks[0]["prompts"] != ranks[1]["prompts"]  # each rank rolled out its own rows
    assert ranks[0]["noise_probs"] == ranks[1]["noise_probs"]  # the same curriculum step on both ranks
    assert ranks[0]["param_sum"] == ranks[1]["param_sum"] != ranks[0]["param_sum_before"]  # synced and moved
    assert all(n > 0 for n in ranks[0]["grad_norms"]) and len(ranks[0]["grad_norms"]) == 2
