"""The `self` engine (SSRL-style self-search): the policy writes its own documents, never sees a gold answer
(asserted on what reaches it), its documents are masked like retrieved text, and a training step runs with it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch

from zerosearch.data.qa import QARecord
from zerosearch.engines import EngineConfig, build_engine
from zerosearch.engines.base import SearchRequest
from zerosearch.engines.self_search import SelfSearchEngine, bind_policy
from zerosearch.agent.generation import STOP_STRINGS, GenOutput
from zerosearch.models import load
from zerosearch.agent.rollout import RolloutConfig, rollout

GOLD = "Zorbalunde"  # a word in no prompt, so finding it anywhere means the gold answer leaked
QUESTION = "Which city hosts the Quixwell archive?"


@pytest.fixture(scope="module")
def tok() -> Any:
    return load("tiny-random", seed=0)[1]


class PolicyScript:
    """The policy's turns from a script; the document turns (the self engine's calls, recognised by their
    stop strings) return two documents and record the decoded prompts they were given."""

    def __init__(self, tok: Any, turns: list[str]):
        self.tok, self.turns, self.policy_calls = tok, turns, 0
        self.doc_prompts: list[str] = []
        self.doc_calls: list[dict[str, Any]] = []

    def generate(self, prompts: list[list[int]], max_new_tokens: int, stop_strings: Sequence[str],
                 temperature: float, top_p: float, seed: int) -> list[GenOutput]:
        if tuple(stop_strings) == STOP_STRINGS:
            text = self.turns[self.policy_calls]
            self.policy_calls += 1
        else:
            self.doc_prompts += [self.tok.decode(p) for p in prompts]
            self.doc_calls.append({"stop": list(stop_strings), "temperature": temperature, "seed": seed})
            text = " written by the policy\nDoc 2: more of its own words\nDoc 3: cut here"
        ids = self.tok(text, add_special_tokens=False).input_ids
        return [GenOutput(ids, self.tok.decode(ids), "stop") for _ in prompts]


class Spy(SelfSearchEngine):
    """Records the requests as the engine's own machinery (the simulator underneath) receives them."""

    seen: list[SearchRequest]

    def _context(self, i: int, r: SearchRequest) -> Any:
        self.seen = [*getattr(self, "seen", []), r]
        return super()._context(i, r)


def test_self_engine_sees_no_gold_answer_and_its_documents_are_masked(tok: Any) -> None:
    backend = PolicyScript(tok, [f"<search> archive city </search>", f"<answer> {GOLD} </answer>"])
    engine = Spy(k=2, doc_words=10, seed=3, temperature=0.7)
    bind_policy(engine, backend, tok)
    recs = [QARecord(id="q1", question=QUESTION, golden_answers=[GOLD], data_source="nq")]
    ro = rollout(recs, backend, tok, engine, RolloutConfig(max_turns=2, k=2), noise_prob=0.0)
    t = ro[0]

    # What reached the engine: the query and row id; no question, no gold answer.
    assert [(r.query, r.row_id, r.question, r.golden_answers) for r in engine.seen] == [("archive city", "q1", None, None)]
    # What reached the policy as the document prompt: the query, never the question or the answer.
    assert len(backend.doc_prompts) == 1 and "archive city" in backend.doc_prompts[0]
    assert GOLD not in backend.doc_prompts[0] and "Quixwell" not in backend.doc_prompts[0]
    assert backend.doc_calls[0]["stop"] == ["Doc 3", "Document 3"] and backend.doc_calls[0]["temperature"] == 0.7

    # The k=2 documents it wrote come back in the information block, with mask 0.
    docs = t.documents[0]
    assert [d.text for d in docs] == ["written by the policy", "more of its own words"]
    assert {d.source for d in docs} == {"self"} and t.draws == ["useful"]
    kept = tok.decode([x for x, m in zip(t.response_ids, t.info_mask) if m])
    dropped = tok.decode([x for x, m in zip(t.response_ids, t.info_mask) if not m])
    assert "written by the policy" in dropped and "more of its own words" in dropped
    assert "written by the policy" not in kept and "<search> archive city </search>" in kept
    assert t.answer == GOLD and t.reward == 1.0


def test_self_engine_draws_noisy_with_the_curriculum_probability(tok: Any) -> None:
    backend = PolicyScript(tok, [])
    engine = SelfSearchEngine(k=2, seed=0)
    bind_policy(engine, backend, tok)
    engine.search([SearchRequest(query="x", k=2, noise_prob=1.0), SearchRequest(query="y", k=2, mode="useful")])
    assert "noisy" in backend.doc_prompts[0].lower() and "noisy" not in backend.doc_prompts[1].lower()
    assert engine.stats()["noisy"] == 1 and engine.stats()["useful"] == 1


def test_unbound_self_engine_says_what_is_missing_and_refuses_a_cache() -> None:
    engine = build_engine(EngineConfig(name="self", k=2))
    assert isinstance(engine, SelfSearchEngine) and not engine.bound and engine.is_simulator
    assert not engine.sees_gold_answers  # evaluation accepts it
    with pytest.raises(ValueError, match="bind_policy"):  # a user error on the command line: one clear line
        engine.search([SearchRequest(query="x", k=2)])
    with pytest.raises(ValueError, match="real engines only"):
        build_engine(EngineConfig(name="self", cache="c.sqlite"))


class SearchFirst:
    """The real tiny-random backend, except that the policy's first turn is a scripted search (a random
    policy would rarely search, and the test is about what happens when it does)."""

    def __init__(self, inner: Any, tok: Any):
        self.inner, self.tok, self.policy_calls, self.doc_calls = inner, tok, 0, 0

    def generate(self, prompts, max_new_tokens, stop_strings, temperature, top_p, seed):  # type: ignore[no-untyped-def]
        if tuple(stop_strings) == STOP_STRINGS:
            self.policy_calls += 1
            if self.policy_calls == 1:
                ids = self.tok("<search> who founded it </search>", add_special_tokens=False).input_ids
                return [GenOutput(ids, self.tok.decode(ids), "stop") for _ in prompts]
        else:
            self.doc_calls += 1
        return self.inner.generate(prompts, max_new_tokens, stop_strings, temperature, top_p, seed)


def test_a_training_step_runs_with_the_self_engine(tmp_path) -> None:
    from test_trainer import make_cfg

    from zerosearch.training.trainer import Trainer

    cfg = make_cfg(tmp_path, "engine={name: self, k: 2, max_new_tokens: 12, doc_words: 5}", "train.eval_every=0",
                   "rollout.max_new_tokens_per_turn=16")
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    try:
        assert isinstance(trainer.engine, SelfSearchEngine) and trainer.engine.backend.backend is trainer.backend
        trainer.backend = SearchFirst(trainer.backend, trainer.tok)
        bind_policy(trainer.engine, trainer.backend, trainer.tok)
        before = [p.detach().clone() for p in trainer.policy.parameters()]
        start = trainer.engine.stats()  # the trainer's start-up check has already sent one query
        metrics = trainer.step(1)
    finally:
        trainer.close()
    assert trainer.backend.doc_calls == 1 and metrics["searches"] == 1.0  # every row searched once, one batch
    after = trainer.engine.stats()
    assert after["queries"] - start["queries"] == 4 and after["backend_prompts"] - start["backend_prompts"] == 4
    assert metrics["policy_tokens"] < metrics["response_tokens"]  # the self-written documents are masked
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))


def test_the_self_config_loads_and_builds_its_engine() -> None:
    from pathlib import Path

    from zerosearch.training.config import load_train_config

    cfg = load_train_config(Path(__file__).resolve().parents[1] / "configs" / "smol-self.yaml", [])
    engine = build_engine(EngineConfig.from_dict(cfg.engine))
    assert isinstance(engine, SelfSearchEngine) and engine.k == 3 and cfg.curriculum.fixed == 0.0


def test_serve_refuses_the_self_engine_at_start_up(capsys) -> None:
    from zerosearch.cli import main

    assert main(["serve", "--engine", "self", "--port", "0"]) == 2  # before binding a port or loading anything
    assert "--engine self needs the policy" in capsys.readouterr().err
