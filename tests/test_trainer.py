"""The trainer end to end on tiny-random: each algorithm, checkpoints and exact resume, the loss-mask
switch, refusal to clobber a run, and a learning signal (GRPO raises the rewarded answer's probability)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from zerosearch.config import load_train_config
from zerosearch.engines.base import Document, SearchEngine, SearchRequest
from zerosearch.generation import GenOutput
from zerosearch.io import read_jsonl
from zerosearch.models import load
from zerosearch.rollout import collate, rollout
from zerosearch.trainer import Trainer

VOLATILE = ("time_", "tokens_per_s")  # wall-clock figures differ between any two runs


class DocsEngine(SearchEngine):
    name = "docs"

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        return [[Document(title=f"T{i}", text=f"about {r.query}", source="docs", meta={"mode": "useful"})
                 for i in range(r.k)] for r in requests]


class AlternatingBackend:
    """Row i of every call answers answers[i % len(answers)] (after one search turn, when `search_first`)."""

    def __init__(self, tok: Any, answers: list[str], search_first: bool = False):
        self.tok, self.answers, self.search_first, self.calls = tok, answers, search_first, 0

    def generate(self, prompts, max_new_tokens, stop_strings, temperature, top_p, seed):
        self.calls += 1
        out = []
        for i, _ in enumerate(prompts):
            text = "<search> the query </search>" if self.search_first and self.calls == 1 else \
                f"<answer> {self.answers[i % len(self.answers)]} </answer>"
            ids = self.tok(text, add_special_tokens=False).input_ids
            out.append(GenOutput(ids, self.tok.decode(ids), "stop"))
        return out


def make_cfg(tmp_path, *overrides: str):
    base = [
        "model.name=tiny-random", "model.dtype=float32", f"data.world_dir={tmp_path / 'world'}",
        "data.world={n_people: 30, n_places: 15, n_orgs: 15, n_works: 15, n_questions: 80}", "data.dev_size=2",
        "engine={name: bm25, corpus: world, k: 2}", "rollout.max_turns=1", "rollout.max_new_tokens_per_turn=6",
        "rollout.max_obs_tokens=64", "rollout.max_prompt_tokens=400", "rollout.max_total_tokens=600",
        "rollout.n=2", "train.batch_size=2", "train.steps=2", "train.eval_every=2", "train.save_every=1",
        "optim.lr=1e-3", "optim.mini_batch_size=2", "optim.micro_batch_size=1",
    ]
    return load_train_config(None, base + list(overrides))


def run(cfg, out, **kw) -> Trainer:
    trainer = Trainer(cfg, out, progress=False, engine=DocsEngine(), **kw)
    trainer.fit()
    trainer.close()
    return trainer


def stable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rows]


@pytest.mark.parametrize("algo", ["grpo", "ppo", "reinforce_pp", "reinforce"])
def test_each_algorithm_trains_and_exports(tmp_path, algo):
    cfg = make_cfg(tmp_path, f"algorithm={{name: {algo}}}")
    before = load("tiny-random")[0]
    trainer = run(cfg, tmp_path / "run")
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2] and "dev/reward" in rows[0] and "dev/reward" in rows[2]
    for key in ("reward", "noise_prob", "turns", "searches", "valid_action_rate", "entropy", "clipfrac",
                "grad_norm", "time_rollout", "time_engine", "time_update", "tokens_per_s"):
        assert key in rows[1], key
    if algo == "ppo":
        assert "vf_loss" in rows[1] and trainer.critic is not None
    final, _ = load(str(tmp_path / "run" / "final"))
    assert not all(torch.equal(a, b) for a, b in zip(before.parameters(), final.parameters()))
    assert (tmp_path / "run" / "metrics.png").stat().st_size > 1000
    assert len(read_jsonl(tmp_path / "run" / "samples.jsonl")) == 2 * 2  # samples_per_step x steps
    assert [p.name for p in sorted((tmp_path / "run" / "checkpoints").iterdir())] == ["step-000001", "step-000002"]


def test_resume_reproduces_the_uninterrupted_run(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path, "train.steps=3", "algorithm={name: ppo}")
    run(cfg, tmp_path / "full")

    real_step = Trainer.step

    def crash_at_3(self, step):
        if step == 3:
            raise KeyboardInterrupt("simulated crash")
        return real_step(self, step)

    monkeypatch.setattr(Trainer, "step", crash_at_3)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "crashed")
    monkeypatch.setattr(Trainer, "step", real_step)
    run(cfg, tmp_path / "crashed", resume=True)

    full, resumed = (stable(read_jsonl(tmp_path / d / "metrics.jsonl")) for d in ("full", "crashed"))
    assert [r["step"] for r in resumed] == [0, 1, 2, 3]
    assert resumed == full
    a, b = (load(str(tmp_path / d / "final"))[0] for d in ("full", "crashed"))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_never_clobbers_a_run_and_refuses_a_changed_config(tmp_path):
    cfg = make_cfg(tmp_path, "train.steps=1")
    run(cfg, tmp_path / "run")
    with pytest.raises(ValueError, match="already holds a run"):
        Trainer(cfg, tmp_path / "run", progress=False, engine=DocsEngine())
    with pytest.raises(ValueError, match="different config"):
        Trainer(make_cfg(tmp_path, "train.steps=1", "optim.lr=0.5"), tmp_path / "run", resume=True,
                progress=False, engine=DocsEngine())


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match=r"optim\.lrr: Extra inputs"):
        load_train_config(None, ["optim.lrr=1"])
    with pytest.raises(ValueError, match="unknown algorithm 'ppo2'"):
        load_train_config(None, ["algorithm={name: ppo2}"])
    with pytest.raises(ValueError, match="not of the form"):
        load_train_config(None, ["optim.lr"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: -3\n")
    with pytest.raises(ValueError, match=rf"{bad}: train\.steps"):
        load_train_config(bad)


def test_loss_mask_switch_selects_policy_tokens_or_all_response_tokens(tmp_path):
    for on in (True, False):
        trainer = Trainer(make_cfg(tmp_path, f"train.loss_mask={str(on).lower()}", "rollout.max_turns=2",
                                   "rollout.max_new_tokens_per_turn=20"),
                          tmp_path / f"run-{on}", progress=False, engine=DocsEngine())
        trainer.backend = AlternatingBackend(trainer.tok, ["Paris"], search_first=True)
        ro = rollout(trainer.train_data[:1], trainer.backend, trainer.tok, trainer.engine, trainer.rollout_cfg)
        batch = collate(ro, trainer.tok.pad_token_id)
        rb = trainer._rollout_batch(ro, batch)
        assert ro[0].searches == 1 and 0 < batch["info_mask"].sum() < batch["response_mask"].sum()
        assert torch.equal(rb.mask, (batch["info_mask"] if on else batch["response_mask"]).float())


def test_grpo_raises_the_probability_of_the_rewarded_answer(tmp_path):
    trainer = Trainer(make_cfg(tmp_path, "train.steps=4", "rollout.n=4", "rollout.max_new_tokens_per_turn=30",
                               "algorithm={name: grpo, kl_loss_coef: 0.0, entropy_coef: 0.0}"),
                      tmp_path / "run", progress=False, engine=DocsEngine())
    rec = trainer.train_data[0]
    trainer.train_data = [rec]  # every step: the same question, half the samples right, half wrong
    gold = rec.golden_answers[0]
    trainer.backend = AlternatingBackend(trainer.tok, [gold, "Nobody Knows"])

    def margin() -> float:
        ro = rollout([rec], trainer.backend, trainer.tok, trainer.engine, trainer.rollout_cfg)
        from zerosearch.rollout import compute_logprobs

        lp = compute_logprobs(trainer.policy, collate(ro, trainer.tok.pad_token_id)).sum(-1)
        assert [t.reward for t in ro] == [1.0, 0.0, 1.0, 0.0]
        return float(lp[0] - lp[1])

    before = margin()
    for step in range(1, 4):
        trainer.step(step)
    assert margin() > before + 1.0
    trainer.close()


def test_every_shipped_config_validates():
    from pathlib import Path

    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert len(configs) >= 8
    for path in configs:
        load_train_config(path)
