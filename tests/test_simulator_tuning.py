"""Simulation tuning, stage by stage: collect (labels, recorded documents, resume, refusal of simulators),
build-sft (pairs, de-duplication, conflicts, balance, the served prompt, bad input), sft-simulator (a
tuned model loads as a simulator) and judge-simulator (the metric arithmetic, on fakes)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from zerosearch.cli import main
from zerosearch.data import QARecord, write_qa
from zerosearch.engines.base import Document, SearchEngine, SearchRequest
from zerosearch.engines.sim_prompts import render_sim_prompt
from zerosearch.generation import GenOutput
from zerosearch.io import read_jsonl
from zerosearch.rollout import RolloutConfig
from zerosearch.simulator.build_sft import build_sft, read_trajectories
from zerosearch.simulator.collect import collect
from zerosearch.simulator.judge import judge, markdown

RECORDS = [QARecord(id=f"q{i}", question=f"Who founded town {i}?", golden_answers=[f"Founder {i}"], data_source="t")
           for i in range(4)]


class ScriptedPolicy:
    """Searches the question first; then answers "Founder 1" whatever was asked (right only for town 1).
    (The instruction itself mentions <information> once; a second one is a search result.)"""

    def __init__(self, tok: Any):
        self.tok = tok

    def generate(self, prompts: list[list[int]], max_new_tokens: int, stop_strings: Sequence[str], temperature: float,
                 top_p: float, seed: int) -> list[GenOutput]:
        outs = []
        for p in prompts:
            text = self.tok.decode(p)
            q = re.search(r"Question: (.*?)\n", text).group(1)
            reply = "<answer> Founder 1 </answer>" if text.count("<information>") > 1 else f"<search> {q} </search>"
            ids = self.tok(reply, add_special_tokens=False).input_ids
            outs.append(GenOutput(ids, self.tok.decode(ids), "stop"))
        return outs


class FakeEngine(SearchEngine):
    name = "fake"

    def __init__(self, sees_gold: bool = False):
        self.sees_gold_answers = sees_gold
        self.calls = 0

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        self.calls += 1
        return [[Document(title="T", text=f"doc {i} on {r.query}", source="fake") for i in range(r.k)] for r in requests]


@pytest.fixture(scope="module")
def tok() -> Any:
    from zerosearch.models import load

    return load("tiny-random")[1]


CFG = RolloutConfig(max_turns=2, max_new_tokens_per_turn=16, k=2, n=2)


def test_collect_labels_trajectories_and_records_the_documents(tok: Any, tmp_path: Path) -> None:
    counts = collect(RECORDS, ScriptedPolicy(tok), tok, FakeEngine(), CFG, tmp_path / "t.jsonl")
    rows = read_jsonl(tmp_path / "t.jsonl")
    assert len(rows) == 8 and counts["trajectories"] == 8 and counts["questions"] == 4
    assert [r["label"] for r in rows if r["id"] == "q1"] == ["positive", "positive"]
    assert counts["positive"] == 2 and counts["negative"] == 6
    s = rows[0]["searches"]
    assert s[0]["query"] == "Who founded town 0?" and [d["text"] for d in s[0]["documents"]] == \
        ["doc 0 on Who founded town 0?", "doc 1 on Who founded town 0?"]


def test_collect_resumes_to_the_same_file(tok: Any, tmp_path: Path) -> None:
    collect(RECORDS, ScriptedPolicy(tok), tok, FakeEngine(), CFG, tmp_path / "whole.jsonl", chunk=1)

    class Crash(Exception):
        pass

    def crash(done: int, total: int) -> None:
        if done == 2:
            raise Crash
    out = tmp_path / "crashed.jsonl"
    with pytest.raises(Crash):
        collect(RECORDS, ScriptedPolicy(tok), tok, FakeEngine(), CFG, out, chunk=1, progress=crash)
    whole = (tmp_path / "whole.jsonl").read_text().splitlines(keepends=True)
    with open(out, "a") as f:  # the next question half-written: one of its two samples, then a cut line
        f.write(whole[4] + whole[5][:30])
    engine = FakeEngine()
    counts = collect(RECORDS, ScriptedPolicy(tok), tok, engine, CFG, out, chunk=1)
    assert out.read_text() == "".join(whole)
    assert counts["new_questions"] == 2 and engine.calls == 2  # q2 (incomplete) and q3, one search turn each


def test_collect_refuses_a_simulator(tok: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a real engine"):
        collect(RECORDS, ScriptedPolicy(tok), tok, FakeEngine(sees_gold=True), CFG, tmp_path / "t.jsonl")


def _traj(id_: str, label: str, *queries_docs: tuple[str, list[str]]) -> dict[str, Any]:
    return {"id": id_, "question": f"Question {id_}?", "golden_answers": [f"Answer {id_}", "alias"], "label": label,
            "searches": [{"query": q, "documents": [{"title": "", "text": t, "source": "x"} for t in d]}
                         for q, d in queries_docs]}


def test_build_sft_pairs_dedup_conflicts_and_balance() -> None:
    trajs = [
        _traj("a", "positive", ("alpha query", ["d1", "d2"]), ("beta", ["d3"])),
        _traj("a", "positive", ("Alpha  query.", ["d1"])),  # the same query once normalised: a duplicate
        _traj("a", "negative", ("beta", ["d4"])),  # beta is useful and noisy for question a: dropped
        _traj("b", "negative", ("gamma", ["d5"]), ("delta", [])),  # delta has no documents: skipped
        _traj("c", "negative", ("eps", ["d6"])),
    ]
    examples, counts = build_sft(trajs)
    assert counts == {"pairs_seen": 7, "skipped_empty": 1, "duplicates": 1, "conflicts_dropped": 2,
                      "useful": 1, "noisy": 2, "written": 3}
    useful = next(e for e in examples if e["mode"] == "useful")
    assert useful["prompt"] == render_sim_prompt("alpha query", 2, "useful", "Question a?", "Answer a", family="sft")
    assert useful["segments"] == [["Doc 1:", False], [" d1\nDoc 2: d2", True]]
    balanced, counts = build_sft(trajs, balance=True, seed=1)
    assert counts["useful"] == counts["noisy"] == 1 and len(balanced) == 2


def test_build_sft_bad_input_names_file_line_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "t.jsonl"
    rows = [_traj("a", "positive", ("q", ["d"])), {**_traj("b", "positive"), "label": "maybe"}]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"t.jsonl:2: field 'label' must be"):
        read_trajectories(bad)
    assert main(["build-sft", str(bad), "--out", str(tmp_path / "s.jsonl")]) == 2
    assert "t.jsonl:2" in capsys.readouterr().err
    assert not (tmp_path / "s.jsonl").exists()


def test_sft_simulator_result_serves_as_a_simulator(tmp_path: Path) -> None:
    from zerosearch.engines import EngineConfig, build_engine

    trajs = tmp_path / "t.jsonl"
    trajs.write_text("".join(json.dumps(_traj(i, lab, ("q " + i, ["some text", "more text"]))) + "\n"
                             for i, lab in (("a", "positive"), ("b", "negative"))))
    assert main(["build-sft", str(trajs), "--out", str(tmp_path / "s.jsonl")]) == 0
    assert main(["sft-simulator", "--base", "tiny-random", "--data", str(tmp_path / "s.jsonl"), "--out",
                 str(tmp_path / "sim"), "--steps", "2", "--batch-size", "2"]) == 0
    assert len(read_jsonl(tmp_path / "sim" / "loss.jsonl")) == 2
    cfg = EngineConfig(name="simulated", model=str(tmp_path / "sim" / "final"), sim_mode="sft", k=2, max_new_tokens=8)
    with build_engine(cfg) as sim:
        docs = sim.search([SearchRequest("q", k=2, question="Q?", golden_answers=["A"], mode="noisy")])
    assert len(docs) == 1 and all(d.meta["mode"] == "noisy" for d in docs[0])


class FakeSim(SearchEngine):
    """Useful documents state the answer, noisy ones do not; the second document of a noisy result is
    missing, so 'complete' is measurable too."""

    name = "fake-sim"
    sees_gold_answers = True

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        return [[Document("", f"It was {r.golden_answers[0]}." if r.mode == "useful" else "Unrelated.", "sim")]
                * (r.k if r.mode == "useful" else r.k - 1) for r in requests]


class HalfReal(SearchEngine):
    name = "half-real"

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        return [[Document("", f"Town {r.row_id[1]} was founded by Founder {r.row_id[1]}." if int(r.row_id[1]) % 2 else "x",
                          "real")] * r.k for r in requests]


def test_judge_metric_arithmetic(tmp_path: Path) -> None:
    from zerosearch.generation import HFBackend
    from zerosearch.models import load

    model, tok = load("tiny-random")
    result = judge(RECORDS, {"fake": FakeSim()}, HalfReal(), HFBackend(model.eval(), tok), tok, k=2)
    rows = result["rows"]
    assert list(rows) == ["fake useful", "fake noisy", "fake gap", "real"]
    assert rows["fake useful"]["answer_in_docs"] == 1.0 and rows["fake noisy"]["answer_in_docs"] == 0.0
    assert rows["fake gap"]["answer_in_docs"] == 1.0 and rows["real"]["answer_in_docs"] == 0.5
    assert rows["fake useful"]["complete"] == 1.0 and rows["fake noisy"]["complete"] == 0.0
    assert 0.0 <= rows["real"]["reader_em"] <= 1.0
    table = markdown(result)
    assert "| fake gap | +100.0 |" in table and "| real | 50.0 |" in table
    assert result["examples"][0]["fake useful"] == ["It was Founder 0.", "It was Founder 0."]


def test_judge_simulator_command(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "contents": f'"Town {i}"\nTown {i} was founded by Founder {i}.'})
                              + "\n" for i in range(4)))
    write_qa(tmp_path / "dev.jsonl", RECORDS)
    assert main(["judge-simulator", "--sim", "tiny-random@sft", "--sim", "tiny-random@prompt", "--data",
                 str(tmp_path / "dev.jsonl"), "--reader", "tiny-random", "--limit", "2", "--corpus", str(corpus),
                 "--k", "2", "--max-new-tokens", "8", "--out", str(tmp_path / "j")]) == 0
    table = (tmp_path / "j" / "judge.md").read_text()
    for row in ("tiny-random@sft useful", "tiny-random@prompt gap", "real"):
        assert f"| {row} |" in table
    assert json.loads((tmp_path / "j" / "judge.json").read_text())["questions"] == 2
    assert len(read_jsonl(tmp_path / "j" / "examples.jsonl")) == 2
