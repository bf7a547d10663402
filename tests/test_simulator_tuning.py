"""Simulation tuning, stage by stage: collect (labels by EM and F1, recorded documents, resume to the very
file of an uninterrupted run, refusal of simulators), build-sft (pairs, de-duplication, conflicts, balance,
the prompt the SFT-mode simulator is served, bad input), sft-simulator (full and LoRA results load as
simulators) and judge-simulator (the metric arithmetic on fakes, trajectory queries, the command's files)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from zerosearch.cli import main
from zerosearch.data.qa import QARecord, write_qa
from zerosearch.engines.base import Document, SearchEngine, SearchRequest
from zerosearch.engines.sim_backends import Generation
from zerosearch.engines.sim_prompts import render_sim_prompt
from zerosearch.engines.simulated import SimulatedEngine
from zerosearch.agent.generation import GenOutput
from zerosearch.io import read_jsonl
from zerosearch.agent.rollout import RolloutConfig
from zerosearch.simulator.build_sft import build_sft, read_trajectories
from zerosearch.simulator.collect import collect
from zerosearch.simulator.judge import judge, markdown, with_queries

RECORDS = [QARecord(id=f"q{i}", question=f"Who founded town {i}?", golden_answers=[f"Founder {i}"], data_source="t")
           for i in range(4)]


class TextBackend:
    """A generation backend whose reply is a function of the decoded prompt (tokenised like a real one)."""

    def __init__(self, tok: Any, reply: Callable[[str], str]):
        self.tok, self.reply = tok, reply

    def generate(self, prompts: list[list[int]], max_new_tokens: int, stop_strings: Sequence[str], temperature: float,
                 top_p: float, seed: int) -> list[GenOutput]:
        outs = []
        for p in prompts:
            ids = self.tok(self.reply(self.tok.decode(p)), add_special_tokens=False).input_ids
            outs.append(GenOutput(ids, self.tok.decode(ids), "stop"))
        return outs


def _policy_reply(prompt: str) -> str:
    """Search the question first; then answer "Founder 1" whatever was asked (right only for town 1).
    (The instruction itself mentions <information> once; a second one is a search result.)"""
    q = re.search(r"Question: (.*?)\n", prompt).group(1)
    return "<answer> Founder 1 </answer>" if prompt.count("<information>") > 1 else f"<search> {q} </search>"


class ScriptedPolicy(TextBackend):
    def __init__(self, tok: Any):
        super().__init__(tok, _policy_reply)


class FakeEngine(SearchEngine):
    name = "fake"

    def __init__(self, sees_gold: bool = False):
        self.sees_gold_answers = sees_gold
        self.calls = 0

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        self.calls += 1
        return [[Document(title="T", text=f"doc {i} on {r.query}", source="fake") for i in range(r.k)]
                for r in requests]


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
    # "Founder 1" against "Founder 0": F1 0.5, so by F1 every trajectory is positive at 0.5 and none but q1's at 0.6
    for threshold, positive in ((0.5, 8), (0.6, 2)):
        f1 = collect(RECORDS, ScriptedPolicy(tok), tok, FakeEngine(), CFG, tmp_path / f"f1-{threshold}.jsonl",
                     label_by="f1", threshold=threshold)
        assert f1["positive"] == positive
    s = rows[0]["searches"]
    assert s[0]["query"] == "Who founded town 0?" and [d["text"] for d in s[0]["documents"]] == \
        ["doc 0 on Who founded town 0?", "doc 1 on Who founded town 0?"]


class SeededPolicy(ScriptedPolicy):
    """Answers with the sampling seed and the batch size: any change in how questions are chunked or
    seeded on a rerun shows in the file."""

    def generate(self, prompts: list[list[int]], max_new_tokens: int, stop_strings: Sequence[str], temperature: float,
                 top_p: float, seed: int) -> list[GenOutput]:
        outs = super().generate(prompts, max_new_tokens, stop_strings, temperature, top_p, seed)
        for o in outs:
            if o.text.startswith("<answer>"):
                o.token_ids = self.tok(f"<answer> {seed} {len(prompts)} </answer>", add_special_tokens=False).input_ids
                o.text = self.tok.decode(o.token_ids)
        return outs


@pytest.mark.parametrize("chunk, cut", [(1, (4, 5)), (2, (4, 6))])
def test_collect_resumes_to_the_same_file(tok: Any, tmp_path: Path, chunk: int, cut: tuple[int, int]) -> None:
    """Crash after the first two questions, then a half-written next chunk (whole lines, then a cut one):
    the rerun redoes that chunk whole, with its own seed and batch, and the file is the uninterrupted one."""
    collect(RECORDS, SeededPolicy(tok), tok, FakeEngine(), CFG, tmp_path / "whole.jsonl", chunk=chunk)

    class Crash(Exception):
        pass

    def crash(done: int, total: int) -> None:
        if done == 2:
            raise Crash
    out = tmp_path / "crashed.jsonl"
    with pytest.raises(Crash):
        collect(RECORDS, SeededPolicy(tok), tok, FakeEngine(), CFG, out, chunk=chunk, progress=crash)
    whole = (tmp_path / "whole.jsonl").read_text().splitlines(keepends=True)
    assert len(set(whole)) == len(whole) == 8  # every sample differs, so a resampled one would show
    with open(out, "a") as f:
        f.write("".join(whole[cut[0]: cut[1]]) + whole[cut[1]][:30])
    engine = FakeEngine()
    counts = collect(RECORDS, SeededPolicy(tok), tok, engine, CFG, out, chunk=chunk)
    assert out.read_text() == "".join(whole)
    assert counts["new_questions"] == 2 and engine.calls == 2 // chunk  # q2 and q3, one search turn per chunk
    assert collect(RECORDS, SeededPolicy(tok), tok, engine, CFG, out, chunk=chunk)["new_questions"] == 0
    assert engine.calls == 2 // chunk  # a finished file: nothing is redone


def test_collect_refuses_a_simulator(tok: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="needs a real engine"):
        collect(RECORDS, ScriptedPolicy(tok), tok, FakeEngine(sees_gold=True), CFG, tmp_path / "t.jsonl")
    assert main(["collect", "--engine", "simulated", "--model", "tiny-random", "--data", "x.jsonl",
                 "--out", str(tmp_path / "t.jsonl")]) == 2
    assert "needs a real engine" in capsys.readouterr().err
    assert not (tmp_path / "t.jsonl").exists()


class LiveEngine(FakeEngine):
    """A live web engine: the same query can return different documents from one call to the next."""

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        self.calls += 1
        return [[Document(title="T", text=f"call {self.calls} row {i}", source="live")] for i, _ in enumerate(requests)]


def test_collect_keeps_each_samples_own_documents(tok: Any, tmp_path: Path) -> None:
    # The n samples of a question ask the same query in the same turn; each must keep what *it* was shown.
    collect(RECORDS[:1], ScriptedPolicy(tok), tok, LiveEngine(), CFG, tmp_path / "t.jsonl")
    rows = read_jsonl(tmp_path / "t.jsonl")
    assert [r["sample"] for r in rows] == [0, 1]
    assert [[d["text"] for d in r["searches"][0]["documents"]] for r in rows] == [["call 1 row 0"], ["call 1 row 1"]]
    with pytest.raises(ValueError, match="label by 'em' or 'f1'"):  # refused before any generation
        collect(RECORDS, None, tok, FakeEngine(), CFG, tmp_path / "bad.jsonl", label_by="exact")


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
        _traj("c", "negative", ("eps", ["d6\n\n  more of d6"])),  # one paragraph in the simulator's format
        _traj("c", "negative", ("zeta", ["see Doc 2: d7"])),  # would parse as two documents: skipped
    ]
    examples, counts = build_sft(trajs)
    assert counts == {"pairs_seen": 8, "skipped_empty": 1, "skipped_unparseable": 1, "duplicates": 1,
                      "conflicts_dropped": 2, "useful": 1, "noisy": 2, "written": 3}
    useful = next(e for e in examples if e["mode"] == "useful")
    assert useful["prompt"] == render_sim_prompt("alpha query", 2, "useful", "Question a?", "Answer a", family="sft")
    assert useful["segments"] == [["Doc 1:", False], [" d1\nDoc 2: d2", True]]
    eps = next(e for e in examples if "Query: eps" in e["prompt"])
    assert eps["segments"][1] == [" d6 more of d6", True] and "Noisy Output:" in eps["prompt"]
    assert sorted(e["mode"] for e in examples) == ["noisy", "noisy", "useful"]
    balanced, counts = build_sft(trajs, balance=True, seed=1)
    assert counts["useful"] == counts["noisy"] == 1 and len(balanced) == 2


def test_build_sft_can_label_by_the_documents() -> None:
    trajs = [_traj("a", "negative", ("q1", ["It was Answer a, they say."])),  # failed, but the docs answer it
             _traj("b", "positive", ("q2", ["Nothing here."])),  # succeeded without the docs holding it
             _traj("c", "negative", ("q3", ["the ALIAS, of course"]))]  # any gold string counts, normalised
    examples, counts = build_sft(trajs, label_by="docs")
    modes = {e["prompt"].split("Query: ")[1].split("\n")[0]: e["mode"] for e in examples}
    assert modes == {"q1": "useful", "q2": "noisy", "q3": "useful"}
    assert counts["useful"] == 2 and counts["noisy"] == 1
    with pytest.raises(ValueError, match="label_by"):
        build_sft(trajs, label_by="judge")


class EchoBackend:
    """A simulator backend that records its prompts and writes back a fixed completion."""

    def __init__(self, completion: str):
        self.completion = completion
        self.prompts: list[tuple[str, str]] = []

    def identity(self) -> str:
        return "echo"

    def generate(self, prompts: Sequence[str], stop: Sequence[str] = (), prefix: str = "") -> list[Generation]:
        self.prompts += [(p, prefix) for p in prompts]
        return [Generation(prefix + self.completion, "stop") for _ in prompts]

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


def test_build_sft_example_is_what_the_sft_mode_simulator_is_served() -> None:
    """The served (prompt, reply prefix) equals the example's (prompt, first segment), and the example's
    completion, written by the simulator, parses back into the collected documents."""
    [ex], _ = build_sft([_traj("a", "negative", (" alpha query ", ["first doc.", "second doc."]))], words=20)
    backend = EchoBackend(ex["segments"][1][0])
    engine = SimulatedEngine(backend, k=5, sim_mode="sft", doc_words=20, leak_guard="off")
    [docs] = engine.search([SearchRequest("alpha query", k=2, question="Question a?", golden_answers=["Answer a"],
                                         mode="noisy")])
    assert backend.prompts == [(ex["prompt"], ex["segments"][0][0])]
    assert [d.text for d in docs] == ["first doc.", "second doc."] and not docs[0].meta["repairs"]


def test_build_sft_bad_input_names_file_line_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "t.jsonl"
    rows = [_traj("a", "positive", ("q", ["d"])), {**_traj("b", "positive"), "label": "maybe"}]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"t.jsonl:2: field 'label' must be"):
        read_trajectories(bad)
    assert main(["build-sft", str(bad), "--out", str(tmp_path / "s.jsonl")]) == 2
    assert "t.jsonl:2: field 'label'" in capsys.readouterr().err
    assert not (tmp_path / "s.jsonl").exists()
    no_text = {**rows[0], "searches": [{"query": "q", "documents": [{"title": "t"}]}]}
    for line, match in [(json.dumps({**rows[0], "golden_answers": None}), r"t.jsonl:2: field 'golden_answers' missing"),
                        (json.dumps(no_text), r"t.jsonl:2: field 'searches\[0\].documents'"),
                        ('{"id": "b", "question": ', r"t.jsonl:2: invalid JSON")]:
        bad.write_text(json.dumps(rows[0]) + "\n" + line + "\n")
        with pytest.raises(ValueError, match=match):
            read_trajectories(bad)
    assert main(["build-sft", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "s.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize("lora_r", [0, 2])
def test_sft_simulator_result_serves_as_a_simulator(tmp_path: Path, lora_r: int) -> None:
    from zerosearch.engines import EngineConfig, build_engine

    trajs = tmp_path / "t.jsonl"
    trajs.write_text("".join(json.dumps(_traj(i, lab, ("q " + i, ["some text", "more text"]))) + "\n"
                             for i, lab in (("a", "positive"), ("b", "negative"))))
    assert main(["build-sft", str(trajs), "--out", str(tmp_path / "s.jsonl")]) == 0
    assert main(["sft-simulator", "--base", "tiny-random", "--data", str(tmp_path / "s.jsonl"), "--out",
                 str(tmp_path / "sim"), "--steps", "2", "--batch-size", "2", "--lora-r", str(lora_r)]) == 0
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
        texts = {r.row_id: f"Town {r.row_id[1]} was founded by Founder {r.row_id[1]}." for r in requests}
        return [[Document("", texts[r.row_id] if int(r.row_id[1]) % 2 else "x", "real")] * r.k for r in requests]


def _reader_reply(prompt: str) -> str:
    """A reader that answers with the first "Founder N" in its documents, else "unknown"."""
    m = re.search(r"Founder \d+", prompt.split("Documents:")[1].split("Question:")[0])
    return f"<answer> {m.group(0) if m else 'unknown'} </answer>"


class ReaderFromDocs(TextBackend):
    def __init__(self, tok: Any):
        super().__init__(tok, _reader_reply)


def test_judge_metric_arithmetic(tok: Any) -> None:
    result = judge(RECORDS, {"fake": FakeSim()}, HalfReal(), ReaderFromDocs(tok), tok, k=2)
    rows = result["rows"]
    assert list(rows) == ["fake useful", "fake noisy", "fake gap", "real"]
    assert rows["fake useful"] == {"answer_in_docs": 1.0, "reader_em": 1.0, "reader_f1": 1.0, "complete": 1.0}
    assert rows["fake noisy"] == {"answer_in_docs": 0.0, "reader_em": 0.0, "reader_f1": 0.0, "complete": 0.0}
    assert rows["fake gap"] == {"answer_in_docs": 1.0, "reader_em": 1.0, "reader_f1": 1.0, "complete": 1.0}
    assert rows["real"] == {"answer_in_docs": 0.5, "reader_em": 0.5, "reader_f1": 0.5, "complete": 1.0}
    table = markdown(result)
    assert "| fake gap | +100.0 | +100.0 | +100.0 | +100.0 |" in table
    assert "| real | 50.0 | 50.0 | 50.0 | 100.0 |" in table
    assert result["examples"][0]["fake useful"] == ["It was Founder 0.", "It was Founder 0."]
    assert (result["questions"], result["queries"]) == (4, 4)


def test_judge_adds_the_queries_of_trajectories(tmp_path: Path) -> None:
    trajs = tmp_path / "t.jsonl"
    rows = [_traj("q1", "positive", ("town 1 founder", ["d"]), ("Who founded town 1", ["d"])),  # = the question
            _traj("q1", "negative", ("Town 1 founder.", ["d"]), ("town one", [])),
            _traj("zz", "positive", ("x", ["d"]))]
    trajs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, queries = with_queries(RECORDS[:2], trajs)
    assert [r.id for r in records] == ["q0", "q1", "q1", "q1"]
    assert queries == ["Who founded town 0?", "Who founded town 1?", "town 1 founder", "town one"]
    trajs.write_text(json.dumps(rows[-1]) + "\n")
    with pytest.raises(ValueError, match="no question id in common"):
        with_queries(RECORDS[:2], trajs)


def test_judge_simulator_command(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    docs = [{"id": str(i), "contents": f'"Town {i}"\nTown {i} was founded by Founder {i}.'} for i in range(4)]
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    write_qa(tmp_path / "dev.jsonl", RECORDS)
    trajs = tmp_path / "t.jsonl"
    trajs.write_text(json.dumps(_traj("q0", "positive", ("town 0", ["d"]))) + "\n")
    assert main(["judge-simulator", "--sim", "tiny-random@sft", "--sim", "tiny-random", "--sim-mode", "prompt",
                 "--data", str(tmp_path / "dev.jsonl"), "--queries", str(trajs), "--reader", "tiny-random", "--limit",
                 "2", "--corpus", str(corpus), "--k", "2", "--max-new-tokens", "8", "--out", str(tmp_path / "j")]) == 0
    table = (tmp_path / "j" / "judge.md").read_text()
    rows = [line.split(" | ")[0].lstrip("| ") for line in table.splitlines()[2:] if line.startswith("|")]
    assert rows == [f"tiny-random@{m} {r}" for m in ("sft", "prompt") for r in ("useful", "noisy", "gap")] + ["real"]
    assert "3 queries about 2 questions, k = 2" in table
    result = json.loads((tmp_path / "j" / "judge.json").read_text())
    assert (result["questions"], result["queries"]) == (2, 3)
    assert result["config"]["sims"]["tiny-random@prompt"]["sim_mode"] == "prompt"
    assert result["config"]["real_engine"]["name"] == "bm25"
    examples = read_jsonl(tmp_path / "j" / "examples.jsonl")
    assert len(examples) == 3 and [e["query"] for e in examples[:2]] == ["Who founded town 0?", "town 0"]


def test_judge_simulator_refuses_a_simulator_as_the_real_engine(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["judge-simulator", "--sim", "tiny-random", "--engine", "simulated", "--out", str(tmp_path)]) == 2
    assert "names the real engine" in capsys.readouterr().err
    assert main(["judge-simulator", "--sim", "m@sft", "--sim", "m", "--out", str(tmp_path)]) == 2
    assert "given twice" in capsys.readouterr().err
