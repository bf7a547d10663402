"""The sim-to-real gap: paired differences against the reference engine (hand-computed), the engine specs,
and `zerosearch gap` end to end with tiny-random (bm25 as reference, the answer-blind simulator, self)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from zerosearch.cli import main
from zerosearch.data.qa import QARecord, write_qa
from zerosearch.engines import EngineConfig
from zerosearch.evaluation.gap import engine_configs, gap_table, paired_gap


def _p(em: float, f1: float, searches: int = 1, answered: bool = True) -> dict:
    return {"em": em, "f1": f1, "searches": searches, "prediction": "x" if answered else None}


def test_paired_gap_by_hand() -> None:
    q = [("nq", "1"), ("nq", "2"), ("nq", "3"), ("nq", "4")]
    real = dict(zip(q, [_p(1, 1.0), _p(0, 0.5), _p(1, 1.0), _p(0, 0.0)]))
    sim = dict(zip(q, [_p(0, 0.5), _p(1, 1.0), _p(0, 0.0), _p(0, 0.0, searches=0, answered=False)]))
    sim[("nq", "5")] = _p(1, 1.0)  # a question only one engine saw is not paired
    gap = paired_gap({"bm25": real, "sim": sim})
    assert gap["reference"] == "bm25" and gap["n"] == 4
    r, s = gap["engines"]["bm25"], gap["engines"]["sim"]
    assert (r["em"], r["f1"]) == (0.5, 0.625) and (s["em"], s["f1"]) == (0.25, 0.375)
    # d_em = [-1, +1, -1, 0]: mean -0.25; sample sd = sqrt((0.5625 + 1.5625 + 0.5625 + 0.0625) / 3)
    assert s["d_em"] == -0.25 and s["se_em"] == pytest.approx(math.sqrt(2.75 / 3) / 2)
    assert s["d_f1"] == -0.25 and (s["lost"], s["gained"]) == (2, 1)
    assert s["searches"] == 0.75 and s["answered"] == 0.75
    table = gap_table(gap)
    assert "| sim | 25.0 | 37.5 | -25.0 (47.9) | -25.0 (" in table and "| bm25 | 50.0 | 62.5 | (reference)" in table


def test_engine_specs_and_a_simulated_reference_is_refused(tmp_path: Path) -> None:
    base = EngineConfig(corpus="c.jsonl", k=3)
    got = engine_configs(["bm25", "simulated-blind", "self"], base)
    assert [(label, c.name, c.answer_blind, c.corpus) for label, c in got] == [
        ("bm25", "bm25", False, "c.jsonl"), ("simulated-blind", "simulated", True, "c.jsonl"), ("self", "self", False, "c.jsonl")]
    (tmp_path / "sft-sim.yaml").write_text("engine: {name: simulated, answer_blind: true, sim_mode: sft}\n")
    assert engine_configs(["bm25", str(tmp_path / "sft-sim.yaml")], base)[1][0] == "sft-sim"
    with pytest.raises(ValueError, match="reference"):
        engine_configs(["self", "bm25"], base)
    with pytest.raises(ValueError, match="neither one of"):
        engine_configs(["bm25", "google"], base)


def test_gap_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "contents": f'"Town {i}"\nTown {i} was founded by Founder {i}.'})
                              + "\n" for i in range(5)))
    write_qa(tmp_path / "qa.jsonl", [QARecord(id=f"q{i}", question=f"Who founded town {i}?", golden_answers=[f"Founder {i}"],
                                              data_source="towns") for i in range(3)])
    args = ["gap", "--model", "tiny-random", "--data", str(tmp_path / "qa.jsonl"), "--corpus", str(corpus),
            "--engines", "bm25,simulated-blind,self", "--sim-model", "tiny-random", "--max-new-tokens", "8",
            "--k", "2", "--max-tokens", "4", "--max-turns", "1", "--no-progress", "--out", str(tmp_path / "gap")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| bm25 |" in out and "| simulated-blind |" in out and "| self |" in out and "3 questions" in out
    gap = json.loads((tmp_path / "gap" / "gap.json").read_text())
    assert gap["n"] == 3 and set(gap["protocol"]) == {"bm25", "simulated-blind", "self"}
    assert gap["protocol"]["self"]["engine"]["name"] == "self" and gap["protocol"]["bm25"]["corpus"]["sha256"]
    for label in ("bm25", "simulated-blind", "self"):
        assert (tmp_path / "gap" / label / "leaderboard-search-agent.json").is_file()
    assert main([*args[:-2], "--out", str(tmp_path / "gap"), "--engine", "bm25"]) == 2  # engines come from --engines
