"""Evaluation: metric tables on known predictions, the honesty rules (answer-blind engines only, requests
stripped of gold answers), resume after a crash, and the eval / compare / ask commands, with tiny-random
and a fake engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from zerosearch.cli import main
from zerosearch.data.qa import QARecord, write_qa
from zerosearch.engines.base import Document, SearchEngine, SearchRequest
from zerosearch.evaluation.eval import AnswerBlind, EvalConfig, compare_table, markdown_table, run_eval, summarize
from zerosearch.io import read_jsonl


class RecordingEngine(SearchEngine):
    name = "fake"

    def __init__(self, sees_gold: bool = False):
        self.sees_gold_answers = sees_gold
        self.requests: list[SearchRequest] = []

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        self.requests += requests
        return [[Document(title=f"T{i}", text=f"about {r.query}", source="fake") for i in range(r.k)] for r in requests]


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    from zerosearch.agent.generation import HFBackend
    from zerosearch.models import load

    model, tok = load("tiny-random", seed=0)
    return HFBackend(model.eval(), tok, batch_size=4), tok


RECORDS = [QARecord(id=f"{ds}{i}", question=f"Who founded the town number {i} of {ds}?", golden_answers=[f"Founder {i}"],
                    data_source=ds) for ds in ("alpha", "beta") for i in range(3)]
FAST = dict(max_new_tokens=6, answer_tokens=4, max_turns=1, chunk=2)


def _row(method: str, ds: str, id_: str, em: float, f1: float, searches: int = 0, invalid: int = 0,
         prediction: str | None = "x") -> dict[str, Any]:
    return {"method": method, "dataset": ds, "id": id_, "em": em, "cover_em": em, "f1": f1, "turns": 1 + searches,
            "searches": searches, "invalid_actions": invalid, "prediction": prediction, "answer_words": 1,
            "tagged": prediction is not None}


def test_summary_on_known_predictions_is_the_macro_average() -> None:
    rows = [_row("rag", "a", "1", 1, 1), _row("rag", "a", "2", 0, 0.5), _row("rag", "a", "3", 0, 0),
            _row("rag", "a", "4", 1, 1), _row("rag", "b", "1", 0, 0.25, searches=2, invalid=1, prediction=None)]
    s = summarize(rows, ["rag"], ["a", "b"])["rag"]
    assert s["a"]["em"] == 0.5 and s["a"]["f1"] == 0.625 and s["a"]["n"] == 4
    assert s["b"]["em"] == 0.0 and s["b"]["invalid_rate"] == pytest.approx(1 / 3)  # 1 invalid of 2 searches + 1
    assert s["b"]["tagged"] == 0.0 and s["a"]["tagged"] == 1.0
    assert s["avg"]["em"] == 0.25  # macro: (0.5 + 0.0) / 2, not the micro 2/5
    assert s["avg"]["f1"] == pytest.approx((0.625 + 0.25) / 2)
    table = markdown_table(summarize(rows, ["rag"], ["a", "b"]))
    assert "| method | a | b | avg |" in table and "| rag | 50.0 | 0.0 | 25.0 |" in table


def test_untagged_answers_fall_back_to_the_first_line_outside_think() -> None:
    from zerosearch.evaluation.eval import untagged_answer

    assert untagged_answer("Paris is the capital.\nMore text") == "Paris is the capital."
    assert untagged_answer("<think> hmm\nstill thinking </think>\n\n Paris \n") == "Paris"
    assert untagged_answer("<think> never closed") is None and untagged_answer("  \n ") is None


def test_compare_table_shows_differences_to_the_first_run() -> None:
    a = {"summary": summarize([_row("direct", "a", "1", 0, 0), _row("direct", "a", "2", 1, 1)], ["direct"], ["a"])}
    b = {"summary": summarize([_row("direct", "a", "1", 1, 1), _row("direct", "a", "2", 1, 1)], ["direct"], ["a"])}
    table = compare_table([("base", a), ("new", b)])
    assert "| base | direct | 50.0 | 50.0 |" in table
    assert "| new | direct | 100.0 (+50.0) | 100.0 (+50.0) |" in table


def test_evaluation_refuses_an_engine_that_sees_gold_answers(tiny: Any, tmp_path: Path) -> None:
    backend, tok = tiny
    with pytest.raises(ValueError, match="reads gold answers"):
        run_eval(RECORDS, backend, tok, RecordingEngine(sees_gold=True), EvalConfig(methods=["rag"], **FAST), tmp_path)
    # A gold-seeing engine is fine where no engine is used.
    run_eval(RECORDS[:1], backend, tok, RecordingEngine(sees_gold=True), EvalConfig(methods=["direct"], **FAST), tmp_path / "d")


def test_all_methods_run_and_no_request_carries_the_question_or_answers(tiny: Any, tmp_path: Path) -> None:
    backend, tok = tiny
    engine = RecordingEngine()
    cfg = EvalConfig(methods=["direct", "cot", "r1", "rag", "search-agent"], **FAST)
    result = run_eval(RECORDS, backend, tok, engine, cfg, tmp_path, meta={"model": "tiny-random"})
    preds = read_jsonl(tmp_path / "predictions.jsonl")
    assert len(preds) == len(RECORDS) * 5
    assert {p["method"] for p in preds} == set(cfg.methods)
    assert engine.requests and all(r.question is None and r.golden_answers is None and r.noise_prob is None
                                   for r in engine.requests)
    rag = [p for p in preds if p["method"] == "rag"]
    assert all(len(p["documents"]) == cfg.k and p["searches"] == 1 for p in rag)
    assert set(result["summary"]["direct"]) == {"alpha", "beta", "avg"}
    assert result["data"]["alpha"]["n"] == 3 and len(result["data"]["alpha"]["hash"]) == 16
    assert result["model"] == "tiny-random" and result["engine"] == "fake"
    assert (tmp_path / "results.md").read_text().startswith("| method | alpha | beta | avg |")
    assert (tmp_path / "results.csv").read_text().splitlines()[0] == \
        "method,dataset,n,em,cover_em,f1,tagged,turns,searches,invalid_rate,answer_words"


def test_resume_after_a_crash_gives_the_same_table(tiny: Any, tmp_path: Path) -> None:
    backend, tok = tiny
    cfg = EvalConfig(methods=["direct", "search-agent"], **FAST)
    whole = run_eval(RECORDS, backend, tok, RecordingEngine(), cfg, tmp_path / "whole")

    class Crash(Exception):
        pass

    def crash_after_three_chunks(done: int, total: int, method: str) -> None:
        if done >= 6 and method == "search-agent":
            raise Crash
    with pytest.raises(Crash):
        run_eval(RECORDS, backend, tok, RecordingEngine(), cfg, tmp_path / "crashed", progress=crash_after_three_chunks)
    pred = tmp_path / "crashed" / "predictions.jsonl"
    with open(pred, "a") as f:
        f.write('{"method": "search-agent", "dataset": "al')  # an append cut short by the crash
    assert len(pred.read_text().splitlines()) == 9  # 6 direct + 2 search-agent + the partial line
    engine = RecordingEngine()
    resumed = run_eval(RECORDS, backend, tok, engine, cfg, tmp_path / "crashed")
    assert len(engine.requests) <= 4  # only the 4 unfinished search-agent questions ran again
    assert resumed["summary"] == whole["summary"]
    assert (tmp_path / "crashed" / "results.md").read_text() == (tmp_path / "whole" / "results.md").read_text()
    assert len(read_jsonl(pred)) == len(RECORDS) * 2


def test_a_different_evaluation_in_the_same_folder_is_refused(tiny: Any, tmp_path: Path) -> None:
    backend, tok = tiny
    run_eval(RECORDS[:2], backend, tok, None, EvalConfig(methods=["direct"], **FAST), tmp_path)
    with pytest.raises(ValueError, match="different config"):
        run_eval(RECORDS[:2], backend, tok, None, EvalConfig(methods=["cot"], **FAST), tmp_path)
    with pytest.raises(ValueError, match="different data"):
        run_eval(RECORDS[:3], backend, tok, None, EvalConfig(methods=["direct"], **FAST), tmp_path)


def test_bad_methods_and_missing_engine_are_clear_errors(tiny: Any, tmp_path: Path) -> None:
    backend, tok = tiny
    with pytest.raises(ValueError, match="unknown method"):
        EvalConfig(methods=["react"])
    with pytest.raises(ValueError, match="need an engine"):
        run_eval(RECORDS, backend, tok, None, EvalConfig(methods=["rag"], **FAST), tmp_path)


def test_answer_blind_forwards_only_the_query() -> None:
    inner = RecordingEngine()
    AnswerBlind(inner).search([SearchRequest("q", k=2, row_id="r", question="Q?", golden_answers=["A"], mode="useful")])
    assert inner.requests == [SearchRequest("q", k=2, row_id="r")]


def test_eval_and_compare_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "contents": f'"Town {i}"\nTown {i} was founded by Founder {i}.'})
                              + "\n" for i in range(5)))
    write_qa(tmp_path / "qa.jsonl", RECORDS[:3])
    common = ["eval", "--model", "tiny-random", "--data", str(tmp_path / "qa.jsonl"), "--engine", "bm25",
              "--corpus", str(corpus), "--k", "2", "--max-tokens", "4", "--max-turns", "1", "--no-progress"]
    assert main([*common, "--method", "direct,rag", "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--method", "direct", "--limit", "2", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "| method | alpha | avg |" in out
    assert len(read_jsonl(tmp_path / "b" / "predictions.jsonl")) == 2
    # b ran 2 of the 3 questions: another protocol, refused unless allowed, and the fields are named.
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b" / "results.json")]) == 2
    err = capsys.readouterr().err
    assert "b vs a: n_questions: 2 vs 3" in err and "questions_sha256" in err and "--allow-protocol-mismatch" in err
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b" / "results.json"),
                 "--allow-protocol-mismatch", "n_questions,questions_sha256"]) == 0
    table = capsys.readouterr().out
    assert "| a | rag |" in table and "| b | direct |" in table and "b vs a: n_questions: 2 vs 3" in table
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "a" / "leaderboard-rag.json")]) == 0
    assert "| leaderboard-rag | rag |" in capsys.readouterr().out
    assert main(["eval", "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "c"), "--method", "direct"]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert main(["compare", str(tmp_path / "bad.json")]) == 2
    assert "neither a zerosearch results.json" in capsys.readouterr().err


def test_ask_shows_policy_blocks_and_inserted_text_apart(tiny: Any) -> None:
    from zerosearch.cli.ask import segments

    _, tok = tiny
    parts = [("<think> hmm </think><search> town 1 </search>", 1), ("\n\n<information>Doc 1(Title: T) x</information>\n\n", 0),
             ("<answer> Founder 1 </answer>", 1),
             ("\nMy previous action is invalid. If I want to search, I should put the query between <search> and "
              "</search>.", 0)]
    ids, mask = [], []
    for text, m in parts:
        t = tok(text, add_special_tokens=False).input_ids
        ids += t
        mask += [m] * len(t)
    kinds = segments(ids, mask, tok)
    assert [k for k, _ in kinds] == ["think", "search", "information", "answer", "rollout"]
    assert kinds[1][1] == "town 1" and kinds[2][1] == "Doc 1(Title: T) x"


def test_duplicate_question_ids_are_refused_by_name(tmp_path):
    rows = [QARecord(id=i, question="q?", golden_answers=["a"], data_source=ds)
            for ds, i in (("nq", "1"), ("tq", "1"), ("tq", "2"), ("tq", "2"))]
    with pytest.raises(ValueError, match="duplicate question id '2' in dataset 'tq'"):
        run_eval(rows, None, None, None, EvalConfig(methods=["direct"]), tmp_path)
    assert not (tmp_path / "predictions.jsonl").exists()


# --- protocol and leaderboard export ---------------------------------------------------------------------


def test_results_record_the_protocol_and_the_leaderboard_export_round_trips(tiny: Any, tmp_path: Path) -> None:
    from zerosearch.evaluation.protocol import read_result

    backend, tok = tiny
    cfg = EvalConfig(methods=["direct", "search-agent"], **FAST)
    result = run_eval(RECORDS, backend, tok, RecordingEngine(), cfg, tmp_path, meta={"model": "tiny-random",
                                                                                       "data_spec": "qa.jsonl"})
    p = result["protocol"]
    assert p["engine"] == {"name": "fake", "identity": "fake"} and p["corpus"] is None
    assert (p["k"], p["max_turns"], p["split"], p["n_questions"]) == (cfg.k, cfg.max_turns, "qa.jsonl", len(RECORDS))
    assert p["sampling"] == {"temperature": 0.0, "top_p": 1.0, "seed": 0}
    assert set(p["prompt_template"]) == {"direct", "search-agent"}
    assert p["prompt_template"]["search-agent"]["name"] == "SEARCH_AGENT"
    assert "Protocol: engine `fake`" in (tmp_path / "results.md").read_text()
    board = json.loads((tmp_path / "leaderboard-search-agent.json").read_text())
    assert set(board) == {"config", "results"} and set(board["results"]) == {"alpha", "beta"}
    assert board["results"]["alpha"] == {"exact_match": result["summary"]["search-agent"]["alpha"]["em"]}
    assert board["config"]["protocol"] == p and board["config"]["method"] == "search-agent"
    # Round trip, on numbers that are not all zero (a random policy scores 0): EM, F1, cover-EM, n per dataset.
    from zerosearch.evaluation.protocol import write_leaderboard

    per = {"nq": {"n": 7, "em": 2 / 7, "f1": 0.4, "cover_em": 3 / 7}, "hotpotqa": {"n": 5, "em": 0.2, "f1": 0.35, "cover_em": 0.6}}
    per["avg"] = {"n": 12, **{k: (per["nq"][k] + per["hotpotqa"][k]) / 2 for k in ("em", "f1", "cover_em")}}
    made = {"model": "m", "protocol": p, "summary": {"search-agent": per}}
    (path,) = write_leaderboard(tmp_path / "lb", made)
    back = read_result(path)
    assert json.loads(path.read_text())["results"] == {"hotpotqa": {"exact_match": 0.2}, "nq": {"exact_match": 2 / 7}}
    assert back["summary"] == made["summary"] and back["protocol"] == p and back["model"] == "m"


def test_protocol_differences_are_named_and_refused_unless_allowed() -> None:
    from zerosearch.evaluation.protocol import check_comparable, compare_protocols

    base = {"engine": {"name": "bm25", "identity": "bm25:c:sha256=1"}, "k": 3, "max_turns": 4,  # (rag: no turns)
            "sampling": {"temperature": 0.0, "top_p": 1.0, "seed": 0}, "prompt_template": {"rag": {"sha256": "a"}}}
    other = {**base, "k": 5, "sampling": {**base["sampling"], "seed": 1},
             "prompt_template": {"rag": {"sha256": "a"}, "direct": {"sha256": "b"}}}  # an extra method is no difference
    assert compare_protocols(base, other) == [("k", 3, 5), ("sampling.seed", 0, 1)]
    assert compare_protocols(base, dict(base)) == []
    with pytest.raises(ValueError) as e:
        check_comparable([("a", base), ("b", other)])
    assert "b vs a: k: 5 vs 3" in str(e.value) and "b vs a: sampling.seed: 1 vs 0" in str(e.value)
    with pytest.raises(ValueError, match="sampling.seed"):
        check_comparable([("a", base), ("b", other)], {"k"})
    assert check_comparable([("a", base), ("b", other)], {"k", "sampling"}) == ["b vs a: k: 5 vs 3",
                                                                                "b vs a: sampling.seed: 1 vs 0"]
    assert check_comparable([("a", base), ("b", other)], {"*"})
    with pytest.raises(ValueError, match="protocol: 'not recorded' vs 'recorded'"):
        check_comparable([("a", base), ("b", None)])
    # Fields a side's methods do not depend on: no engine (direct only), no search agent (no turn limit).
    direct = {**base, "engine": None, "k": 9, "max_turns": 1, "prompt_template": {"direct": {"sha256": "b"}}}
    assert compare_protocols(base, direct) == []
    agent = {**base, "prompt_template": {"search-agent": {"sha256": "s"}}}
    assert compare_protocols(agent, {**agent, "max_turns": 2}) == [("max_turns", 4, 2)]
