"""The trainer end to end on tiny-random: each algorithm, checkpoints and exact resume (with the simulated
engine's RNG), the loss-mask switch, refusal to clobber a run, a learning signal for every algorithm, the
warm-up's unit, the dev engine (never gold-seeing), the sampler's vs the trainer's log-probs, the
engine's counters and the failed-search policy."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from zerosearch.training.config import load_train_config
from zerosearch.engines.base import Document, SearchEngine, SearchRequest
from zerosearch.agent.generation import GenOutput
from zerosearch.io import read_jsonl
from zerosearch.models import load
from zerosearch.agent.rollout import collate, rollout
from zerosearch.training.trainer import Trainer

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
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE) and "seconds" not in k} for r in rows]


SEARCHY = "rollout.max_new_tokens_per_turn=20"  # room for SearchThenAnswer's whole action


class SearchThenAnswer:
    """Searches on a row's first turn, answers `answer` once it has seen an <information> block."""

    def __init__(self, tok: Any, answer: str = "Paris"):
        self.tok, self.answer = tok, answer

    def generate(self, prompts, max_new_tokens, stop_strings, temperature, top_p, seed):
        out = []
        for p in prompts:
            seen = "</information>\n\n" in self.tok.decode(p).split("<|im_start|>assistant")[-1]  # after the prompt
            ids = self.tok(f"<answer> {self.answer} </answer>" if seen else "<search> the query </search>",
                           add_special_tokens=False).input_ids
            out.append(GenOutput(ids, self.tok.decode(ids), "stop"))
        return out


class FlakyEngine(SearchEngine):
    """Good documents for the first `good` calls, then "No results found." fallbacks (a dead endpoint)."""

    name = "flaky"

    def __init__(self, good: int):
        self.good, self.calls = good, 0

    def search(self, requests):
        self.calls += 1
        if self.calls <= self.good:
            return DocsEngine().search(requests)
        return [[Document(title="", text="No results found.", source="flaky", meta={"fallback": True, "error": "dead"})]
                for _ in requests]


@pytest.mark.parametrize("algo", ["grpo", "ppo", "reinforce_pp", "reinforce"])
def test_each_algorithm_trains_and_exports(tmp_path, algo):
    cfg = make_cfg(tmp_path, f"algorithm={{name: {algo}}}")
    trainer = run(cfg, tmp_path / "run")
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2] and "dev/reward" in rows[0] and "dev/reward" in rows[2]
    for key in ("reward", "noise_prob", "turns", "searches", "valid_action_rate", "entropy", "clipfrac",
                "grad_norm", "time_rollout", "time_engine", "time_update", "tokens_per_s"):
        assert key in rows[1], key
    if algo == "ppo":
        assert "vf_loss" in rows[1] and trainer.critic is not None
    assert (tmp_path / "run" / "metrics.png").stat().st_size > 1000
    samples = read_jsonl(tmp_path / "run" / "samples.jsonl")
    assert len(samples) == 2 * 2  # samples_per_step x steps
    for s in samples:  # the loss mask the update used, as text runs that spell the response (the viewer's input)
        assert "".join(text for text, _ in s["loss_mask"]) == s["response"]
        assert isinstance(s["advantage"], float) and isinstance(s["group"], int)
        if s["searches"]:
            assert {m for _, m in s["loss_mask"]} == {0, 1}  # the documents masked, the policy's text trained
    assert [p.name for p in sorted((tmp_path / "run" / "checkpoints").iterdir())] == ["step-000001", "step-000002"]


def crash_at_step(monkeypatch, at: int):
    """Make Trainer.step raise KeyboardInterrupt (a kill) at step `at`; returns the real Trainer.step."""
    real_step = Trainer.step

    def crashing(self, step):
        if step == at:
            raise KeyboardInterrupt("simulated crash")
        return real_step(self, step)

    monkeypatch.setattr(Trainer, "step", crashing)
    return real_step


def test_resume_reproduces_the_uninterrupted_run(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path, "train.steps=3", "algorithm={name: ppo}")
    run(cfg, tmp_path / "full")

    real_step = crash_at_step(monkeypatch, 3)
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


NO_KL = {"grpo": "kl_loss_coef: 0.0", "reinforce": "kl_loss_coef: 0.0", "ppo": "kl_coef: 0.0",
         "reinforce_pp": "kl_coef: 0.0"}


def _bf16(algo: str) -> Any:
    from zerosearch.agent.precision import bf16_native

    return pytest.param(algo, "bf16", marks=pytest.mark.skipif(not bf16_native("cuda" if torch.cuda.is_available() else "cpu"),
                                                               reason="no native bf16 here"))


@pytest.mark.parametrize(("algo", "precision"), [("grpo", "fp32"), ("ppo", "fp32"), ("reinforce_pp", "fp32"),
                                                 ("reinforce", "fp32"), _bf16("grpo")])
def test_each_algorithm_raises_the_probability_of_the_rewarded_answer(tmp_path, algo, precision):
    # Weight decay 0: nothing but the policy-gradient moves the weights, so the direction is the test.
    # bf16: the same test under bf16 autocast (zerosearch.agent.precision); the margin is still scored in fp32.
    trainer = Trainer(make_cfg(tmp_path, "train.steps=4", "rollout.n=4", "rollout.max_new_tokens_per_turn=30",
                               "optim.weight_decay=0.0", "train.eval_every=0", f"optim.precision={precision}",
                               f"algorithm={{name: {algo}, {NO_KL[algo]}, entropy_coef: 0.0}}"),
                      tmp_path / "run", progress=False, engine=DocsEngine())
    rec = trainer.train_data[0]
    trainer.train_data = [rec]  # every step: the same question, half the samples right, half wrong
    gold = rec.golden_answers[0]
    trainer.backend = AlternatingBackend(trainer.tok, [gold, "Nobody Knows"])

    def margin() -> float:
        ro = rollout([rec], trainer.backend, trainer.tok, trainer.engine, trainer.rollout_cfg)
        from zerosearch.agent.rollout import compute_logprobs

        lp = compute_logprobs(trainer.policy, collate(ro, trainer.tok.pad_token_id)).sum(-1)
        assert [t.reward for t in ro] == [1.0, 0.0, 1.0, 0.0]
        return float(lp[0] - lp[1])

    before = margin()
    for step in range(1, 4):
        trainer.step(step)
    assert margin() > before + 1.0
    trainer.close()


def test_warmup_is_counted_in_training_steps(tmp_path):
    # 2 questions x 2 samples, mini-batch 2: two optimizer steps per training step. warmup_ratio 0.5 of
    # 4 steps = 2 training steps: lr x 1/2 at step 1, then the full lr (not x 1/2, 2/2 inside step 1).
    cfg = make_cfg(tmp_path, "train.steps=4", "optim.warmup_ratio=0.5", "train.eval_every=0", "train.save_every=0")
    run(cfg, tmp_path / "run")
    lrs = [r["lr"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert lrs == pytest.approx([0.5e-3, 1e-3, 1e-3, 1e-3])
    with pytest.raises(ValueError, match="warmup_steps was removed: it counted optimizer steps"):
        load_train_config(None, ["optim.warmup_steps=10"])


def test_ppo_critic_values_are_computed_in_eval_mode(tmp_path):
    trainer = Trainer(make_cfg(tmp_path, "algorithm={name: ppo}", "train.eval_every=0"), tmp_path / "run",
                      progress=False, engine=DocsEngine())
    modes = []
    trainer.critic.register_forward_pre_hook(lambda mod, args: modes.append(mod.training))
    trainer.critic.train()  # as `update` leaves it
    ro = rollout(trainer.train_data[:1], trainer.backend, trainer.tok, trainer.engine, trainer.rollout_cfg)
    trainer._rollout_batch(ro, collate(ro, trainer.tok.pad_token_id))
    assert modes and not any(modes)
    trainer.close()


class GoldSeeing(DocsEngine):
    name = "gold-seeing"
    sees_gold_answers = True


class Recording(DocsEngine):
    name = "recording"

    def __init__(self):
        self.requests: list[SearchRequest] = []

    def search(self, requests):
        self.requests += requests
        return super().search(requests)


def test_dev_engine_is_never_gold_seeing(tmp_path):
    # Unset eval_engine + a gold-seeing training engine + world dev data: BM25 over the world's corpus.
    trainer = Trainer(make_cfg(tmp_path), tmp_path / "a", progress=False, engine=GoldSeeing())
    assert trainer.eval_engine.engine.name == "bm25"
    trainer.close()
    # A gold-seeing dev engine is refused, configured or passed in, with AnswerBlind's message.
    with pytest.raises(ValueError, match=r"eval_engine \(the dev batch's engine\).*reads gold answers"):
        Trainer(make_cfg(tmp_path), tmp_path / "b", progress=False, engine=DocsEngine(), eval_engine=GoldSeeing())
    with pytest.raises(ValueError, match=r"eval_engine \(the dev batch's engine\).*reads gold answers"):
        Trainer(make_cfg(tmp_path, "eval_engine={name: simulated, model: tiny-random, max_new_tokens: 8}"),
                tmp_path / "c", progress=False, engine=DocsEngine())
    # What reaches the dev engine: the query, k and row id only, whatever the rollout attached.
    spy = Recording()
    trainer = Trainer(make_cfg(tmp_path, SEARCHY), tmp_path / "d", progress=False, engine=DocsEngine(), eval_engine=spy)
    trainer.backend = SearchThenAnswer(trainer.tok)
    spy.requests.clear()  # the start-up check
    assert trainer.evaluate()["dev/searches"] == 1.0
    assert spy.requests and all(r.question is None and r.golden_answers is None and r.noise_prob is None
                                for r in spy.requests)
    trainer.close()


def test_dev_engine_config_for_each_source():
    """dev_engine_config's four cases: an explicit eval_engine; a real training engine reused; a simulator with
    world dev data -> BM25 over the world; a simulator with other dev data -> the same simulator, answer-blind."""
    from zerosearch.evaluation.dev_eval import dev_engine_config

    sim = {"name": "simulated", "model": "tiny-random", "k": 4, "temperature": 0.3}
    assert dev_engine_config(sim, {"name": "bm25", "corpus": "c.jsonl"}, "world", True).corpus == "c.jsonl"
    assert dev_engine_config({"name": "bm25", "corpus": "c.jsonl"}, None, "dev.jsonl", False) is None
    world = dev_engine_config(sim, None, "world", True)
    assert (world.name, world.corpus, world.k) == ("bm25", "world", 4)
    blind = dev_engine_config(sim, None, "dev.jsonl", True)
    assert (blind.name, blind.answer_blind, blind.model, blind.k, blind.temperature) == \
           ("simulated", True, "tiny-random", 4, 0.3)


def test_sampler_logprobs_equal_the_trainers_old_logprobs_on_the_same_ids(tmp_path):
    from zerosearch.agent.rollout import Trajectory, encode_prompt

    trainer = Trainer(make_cfg(tmp_path, "rollout.temperature=0.7", "train.eval_every=0"), tmp_path / "run",
                      progress=False, engine=DocsEngine())
    tok, model = trainer.tok, trainer.policy
    prompts = [encode_prompt(r.question, tok, trainer.rollout_cfg)[0] for r in trainer.train_data[:2]]
    prompts[1] = prompts[1][:-7]  # rows of different lengths: left padding in the sampler, right in the trainer
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    torch.manual_seed(0)
    # The sampler as HFBackend runs it (softmax(logits / T), no top-k, no eos stop), with its scores kept.
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.7, top_p=1.0, top_k=0,
                         max_new_tokens=8, eos_token_id=[], pad_token_id=tok.pad_token_id, repetition_penalty=1.0,
                         output_scores=True, return_dict_in_generate=True)
    new = out.sequences[:, width:]
    sampler = torch.stack([torch.log_softmax(s.float(), -1).gather(-1, new[:, i: i + 1]).squeeze(-1)
                           for i, s in enumerate(out.scores)], 1)
    trajs = [Trajectory(row_id=str(b), group_id=b, sample=0, data_source="t", question="q", golden_answers=["a"],
                        prompt_ids=p, response_ids=new[b].tolist(), info_mask=[1] * new.shape[1])
             for b, p in enumerate(prompts)]
    batch = collate(trajs, tok.pad_token_id)
    rb = trainer._rollout_batch(trajs, batch)
    assert torch.allclose(rb.old_logp, sampler, atol=1e-4), (rb.old_logp - sampler).abs().max()
    trainer.close()


def test_resume_with_the_simulated_engine_reproduces_its_draws(tmp_path, monkeypatch):
    # The simulator draws useful/noisy from its own RNG (p = 0.5 every step): a resumed run must draw what
    # the uninterrupted one drew, i.e. the engine's RNG travels in the checkpoint.
    cfg = make_cfg(tmp_path, SEARCHY, "train.steps=3", "curriculum.fixed=0.5", "train.eval_every=0", "rollout.n=4",
                   "engine={name: simulated, model: tiny-random, k: 1, max_new_tokens: 12, batch_size: 8}")

    def go(out, **kw):
        trainer = Trainer(cfg, out, progress=False, **kw)
        trainer.backend = SearchThenAnswer(trainer.tok)
        try:
            trainer.fit()
        finally:
            trainer.close()

    go(tmp_path / "full")
    real_step = crash_at_step(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        go(tmp_path / "crashed")
    monkeypatch.setattr(Trainer, "step", real_step)
    go(tmp_path / "crashed", resume=True)
    full, resumed = (stable(read_jsonl(tmp_path / d / "metrics.jsonl")) for d in ("full", "crashed"))
    assert resumed == full and [r["step"] for r in full] == [1, 2, 3]
    assert sum(r["noisy_draws"] for r in full) > 0 and sum(r["useful_draws"] for r in full) > 0
    draws = lambda d: [row["draws"] for row in read_jsonl(tmp_path / d / "samples.jsonl")]
    assert draws("crashed") == draws("full")


class LeakyCounting(DocsEngine):
    """Flags one leaking document per search and counts it, as the simulator's guard does."""

    name = "leaky"

    def __init__(self):
        self.flagged = 0

    def search(self, requests):
        out = super().search(requests)
        for docs in out:
            docs[0].meta.update(leak=True, leak_reason="test")
        self.flagged += len(requests)
        return out

    def stats(self):
        return {"leak_flagged": self.flagged, "identity_note": "text is not a counter"}


def test_engine_counters_are_logged_per_step_and_samples_keep_their_documents(tmp_path):
    trainer = Trainer(make_cfg(tmp_path, SEARCHY, "train.eval_every=0", "rollout.n=2"), tmp_path / "run", progress=False,
                      engine=LeakyCounting())
    trainer.backend = SearchThenAnswer(trainer.tok)
    trainer.fit()
    trainer.close()
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    # 2 questions x 2 samples, one search each: 4 flagged per step, as deltas (not the running total 8).
    assert [r["engine/leak_flagged"] for r in rows] == [4, 4] and "engine/identity_note" not in rows[0]
    samples = read_jsonl(tmp_path / "run" / "samples.jsonl")
    assert samples[0]["documents"][0][0]["meta"]["leak"] is True and len(samples[0]["documents"][0]) == 2


def test_a_dead_engine_fails_at_start_up_with_one_line(tmp_path):
    from zerosearch.training.monitors import EngineCheckError

    with pytest.raises(EngineCheckError, match=r"training engine 'flaky' returned no usable documents .*\(dead\)"):
        Trainer(make_cfg(tmp_path), tmp_path / "run", progress=False, engine=FlakyEngine(good=0))


def test_steps_with_failed_searches_are_skipped_and_a_failing_run_stops_cleanly(tmp_path):
    from zerosearch.training.checkpoint import list_checkpoints
    from zerosearch.training.monitors import TrainingHalted

    # Good for the start-up check and step 1; dead from step 2 on: steps 2 and 3 are skipped, 3 halts.
    cfg = make_cfg(tmp_path, SEARCHY, "train.steps=5", "train.eval_every=0", "train.max_consecutive_failed_steps=2")
    trainer = Trainer(cfg, tmp_path / "run", progress=False, engine=FlakyEngine(good=2))
    trainer.backend = SearchThenAnswer(trainer.tok)
    saved = {}
    real_save = trainer.save
    trainer.save = lambda step: (saved.update({k: v.clone() for k, v in trainer.policy.state_dict().items()}),
                                 real_save(step))[1]
    with pytest.raises(TrainingHalted, match=r"stopped at step 3: 2 steps in a row skipped.*4 of 4 searches "
                                             r"failed.*last good checkpoint: .*step-000001"):
        trainer.fit()
    trainer.close()
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [(r["step"], r["skipped"]) for r in rows] == [(1, 0), (2, 1), (3, 1)] and rows[-1]["halted"] == 1
    assert rows[1]["failed_searches"] == 4 and "pg_loss" not in rows[1]  # not trained on
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-000001"]
    # The skipped steps did not move the weights: they are those of the last good checkpoint.
    assert saved and all(torch.equal(saved[k], v) for k, v in trainer.policy.state_dict().items())


class MatchesNothing(SearchEngine):
    """A working BM25 whose corpus shares no term with the query: an empty result, after the start-up query."""

    name = "nothing"

    def __init__(self):
        self.calls = 0

    def search(self, requests):
        self.calls += 1
        return DocsEngine().search(requests) if self.calls == 1 else [[] for _ in requests]


def test_empty_results_from_a_working_engine_are_trained_on(tmp_path):
    """No documents is an answer (the policy's query matched nothing), not an engine failure: never skipped."""
    cfg = make_cfg(tmp_path, SEARCHY, "train.steps=3", "train.eval_every=0", "train.max_consecutive_failed_steps=1")
    trainer = Trainer(cfg, tmp_path / "run", progress=False, engine=MatchesNothing())
    trainer.backend = SearchThenAnswer(trainer.tok)
    trainer.fit()
    trainer.close()
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [(r["step"], r["skipped"], r["failed_searches"]) for r in rows] == [(1, 0, 0), (2, 0, 0), (3, 0, 0)]
    assert all("pg_loss" in r for r in rows) and all(r["searches"] > 0 for r in rows)


def test_every_shipped_config_validates():
    from pathlib import Path

    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert len(configs) >= 8
    for path in configs:
        load_train_config(path)


def test_a_collapse_alarm_can_stop_the_run_keeping_the_last_good_checkpoint(tmp_path):
    from zerosearch.training.checkpoint import list_checkpoints
    from zerosearch.training.monitors import TrainingHalted

    # A KL limit no update can stay under: step 1 (policy = reference, KL 0) is fine, step 2 alarms and stops.
    cfg = make_cfg(tmp_path, "train.steps=4", "train.eval_every=0", "algorithm={name: grpo, kl_loss_coef: 0.1}",
                   "monitor.kl_max=1e-12", "monitor.stop_on_collapse=true", "monitor.patience=1")
    trainer = Trainer(cfg, tmp_path / "run", progress=False, engine=DocsEngine())
    with pytest.raises(TrainingHalted, match=r"stopped at step 2: collapse alarm \(kl\).*step-000001"):
        trainer.fit()
    trainer.close()
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["alarm/kl"] == 1 and "alarm/kl" not in rows[0]
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-000001"]


class BlindSimulator(DocsEngine):
    """Stands in for an answer-blind simulator (or `self`): sees no answer, but is an LLM writing documents."""

    name = "simulated"


def test_a_simulator_is_never_shared_with_the_dev_batch(tmp_path):
    # An answer-blind simulator as the training engine: the dev batch gets its own engine (here BM25 over
    # the world), so dev searches cannot move the training engine's seed counter or its counters.
    trainer = Trainer(make_cfg(tmp_path), tmp_path / "run", progress=False, engine=BlindSimulator())
    try:
        assert trainer.engine.is_simulator and not trainer.engine.sees_gold_answers
        assert trainer.eval_engine.engine is not trainer.engine and trainer.eval_engine.engine.name == "bm25"
    finally:
        trainer.close()
