"""zerosearch.integrations.common: rows, the policy-only reward, the curriculum's step convention and the
flat metrics. No TRL/veRL needed: this runs in `make test`."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from zerosearch.training.curriculum import Curriculum
from zerosearch.data.qa import QARecord
from zerosearch.engines.base import Document, SearchEngine, SearchRequest
from zerosearch.agent.generation import GenOutput
from zerosearch.integrations.common import (QA_COLUMNS, load_records, mean_metrics, noise_prob, noise_schedule,
                                            policy_text, qa_rows, record_of, rollout_metrics, score_policy)
from zerosearch.agent.rollout import RolloutConfig, rollout


@pytest.fixture(scope="module")
def tok() -> Any:
    from zerosearch.models import load

    return load("tiny-random", seed=0)[1]


class Scripted:
    """Turn t of the row whose prompt holds question q returns script[q][t]."""

    def __init__(self, tok: Any, script: dict[str, list[str]]):
        self.tok, self.script, self.turn = tok, script, 0

    def generate(self, prompts: list[list[int]], max_new_tokens: int, stop_strings: Sequence[str],
                 temperature: float, top_p: float, seed: int) -> list[GenOutput]:
        outs = []
        for p in prompts:
            q = next(q for q in self.script if q in self.tok.decode(p))
            ids = self.tok(self.script[q][self.turn], add_special_tokens=False).input_ids
            outs.append(GenOutput(ids, self.tok.decode(ids), "stop"))
        self.turn += 1
        return outs


class AnswerInDocs(SearchEngine):
    """Documents that contain an <answer> block with the gold answer: a reward read from the whole
    response (not the policy's own tokens) would score it."""

    name = "answer-in-docs"

    def __init__(self) -> None:
        self.noise: list[float | None] = []

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        self.noise += [r.noise_prob for r in requests]
        return [[Document(title="t", text=f"<answer> {r.golden_answers[0]} </answer>", source="x",
                          meta={"mode": "noisy" if (r.noise_prob or 0) > 0.5 else "useful"})] for r in requests]

    def stats(self) -> dict[str, Any]:
        return {"queries": len(self.noise), "leak_flagged": 2, "identity": "not a number", "flag": True}


def test_world_rows_round_trip_to_records() -> None:
    records, world = load_records("world", split="dev")
    assert world is not None and (world / "dev.jsonl").is_file() and records
    rows = qa_rows(records)
    assert set(rows[0]) == set(QA_COLUMNS)
    back = [record_of(r) for r in rows]
    assert [(r.id, r.question, r.golden_answers, r.data_source) for r in back] == \
           [(r.id, r.question, r.golden_answers, r.data_source) for r in records]
    with pytest.raises(KeyError, match="golden_answers"):
        record_of({"id": "1", "question": "q", "data_source": "x"})


def test_file_sources_and_several_at_once(tmp_path: Path) -> None:
    f = tmp_path / "qa.jsonl"
    f.write_text("\n".join(json.dumps({"id": f"r{i}", "question": f"Q{i}?", "golden_answers": [f"A{i}"]})
                           for i in range(3)) + "\n")
    records, world = load_records(str(f))
    assert world is None and [r.question for r in records] == ["Q0?", "Q1?", "Q2?"]
    both, world = load_records(f"{f},world:test")
    assert world is not None and len(both) > 3 and both[0].question == "Q0?"
    with pytest.raises(ValueError, match="splits"):
        load_records("world:nope")


def test_json_and_parquet_sources_give_the_same_rows(tmp_path: Path) -> None:
    """The builder's other formats: a JSON list and a parquet file of the same rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    items = [{"id": f"r{i}", "question": f"Q{i}?", "golden_answers": [f"A{i}", f"B{i}"]} for i in range(3)]
    (tmp_path / "qa.json").write_text(json.dumps(items))
    pq.write_table(pa.table({"id": [it["id"] for it in items], "question": [it["question"] for it in items],
                             "golden_answers": [it["golden_answers"] for it in items]}), tmp_path / "qa.parquet")
    from_json = qa_rows(load_records(str(tmp_path / "qa.json"))[0])
    from_parquet = qa_rows(load_records(str(tmp_path / "qa.parquet"))[0])
    def core(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: r[k] for k in ("id", "question", "golden_answers")} for r in rows]

    assert core(from_json) == core(from_parquet) == items
    assert all(set(r) == set(QA_COLUMNS) for r in from_json + from_parquet)


def test_policy_text_is_what_the_rollout_scored_and_ignores_answers_in_documents(tok: Any) -> None:
    script = {"Who wrote X?": ["<search> X author </search>", "I cannot tell.", "Still no idea."],
              "Capital?": ["<search> capital </search>", "<answer> Paris </answer>"]}
    recs = [QARecord(id="a", question="Who wrote X?", golden_answers=["Mia Ro"], data_source="w"),
            QARecord(id="b", question="Capital?", golden_answers=["Paris"], data_source="w")]
    ro = rollout(recs, Scripted(tok, script), tok, AnswerInDocs(), RolloutConfig(max_turns=2), noise_prob=0.25)
    wrong, right = ro
    for t, want in ((wrong, 0.0), (right, 1.0)):
        text = policy_text(t.response_ids, t.info_mask, tok)
        assert text == "".join(script[t.question])
        s = score_policy(text, t.golden_answers)
        assert s["reward"] == t.reward == want and s["f1"] == t.metrics["f1"] and s["em"] == t.metrics["em"]
        assert s["answered"] == s["valid_format"] == want
    # the gold answer sits in an <answer> block of the documents (and FORCE_ANSWER has <answer> tags): the
    # response holds both, the policy text neither
    assert "<answer> Mia Ro </answer>" in wrong.response and wrong.end == "no_answer"
    assert "<answer>" not in policy_text(wrong.response_ids, wrong.info_mask, tok)
    assert score_policy("no tags", ["x"]) == {"reward": 0.0, "em": 0.0, "cover_em": 0.0, "f1": 0.0,
                                              "answered": 0.0, "valid_format": 0.0}
    with pytest.raises(ValueError, match="differ in length"):
        policy_text([1, 2], [1], tok)


def test_format_weight_reaches_the_reward() -> None:
    # Search-R1's format term (zerosearch.reward.f1_reward): wrong but well-formed earns lambda_f
    assert score_policy("<answer> no </answer>", ["yes"], format_weight=0.2)["reward"] == 0.2


def test_noise_prob_uses_the_trainers_step_convention() -> None:
    sched = noise_schedule(4, p_start=0.0, p_end=0.5, base=4.0)
    assert isinstance(sched, Curriculum)
    # update i (1-based) sees p(i) = (4^(i/4) - 1) / 3 * 0.5; TRL's global_step before update i is i - 1
    want = [(4 ** (i / 4) - 1) / 3 * 0.5 for i in (1, 2, 3, 4)]
    got = [noise_prob(sched, s) for s in range(4)]
    assert all(math.isclose(g, w) for g, w in zip(got, want)) and got[-1] == 0.5
    assert math.isclose(got[0], 0.0690355937, rel_tol=1e-8)
    assert noise_prob(sched, 10) == 0.5  # past the end: clamped at p_end
    assert noise_prob(noise_schedule(4, fixed=0.3), 0) == noise_prob(noise_schedule(4, fixed=0.3), 3) == 0.3
    with pytest.raises(ValueError):
        noise_prob(sched, -1)


def test_rollout_metrics_flat_floats(tok: Any) -> None:
    script = {"Q1?": ["<search> a </search>", "<answer> A </answer>"], "Q2?": ["nothing", "<answer> B </answer>"]}
    recs = [QARecord(id=q, question=q, golden_answers=[q[:2]], data_source="w") for q in script]
    engine = AnswerInDocs()
    ro = rollout(recs, Scripted(tok, script), tok, engine, RolloutConfig(max_turns=2), noise_prob=0.9)
    m = rollout_metrics(ro, noise_prob=0.9, engine_stats=engine.stats())
    assert all(isinstance(v, float) for v in m.values()) and all(k.startswith("zerosearch/") for k in m)
    assert m["zerosearch/turns"] == 2.0 and m["zerosearch/searches"] == 0.5
    assert m["zerosearch/valid_action_rate"] == 3 / 4  # search, answer, answer valid; "nothing" invalid
    assert m["zerosearch/noisy_draws"] == 1.0 and m["zerosearch/useful_draws"] == 0.0
    assert m["zerosearch/noise_prob"] == 0.9 and m["zerosearch/end/answer"] == 1.0
    assert m["zerosearch/engine/leak_flagged"] == 2.0 and m["zerosearch/engine/queries"] == 1.0
    assert "zerosearch/engine/identity" not in m and "zerosearch/engine/flag" not in m
    assert engine.noise == [0.9]


def test_mean_metrics() -> None:
    assert mean_metrics([{"a": 1.0, "b": 2.0}, {"a": 3.0}]) == {"a": 2.0, "b": 2.0}
    assert mean_metrics([]) == {}
