"""Collect search trajectories against a real engine, labelled by whether they reached the answer.

The paper's simulation data: a policy searches a real engine; the query-document pairs of trajectories
that answered correctly are examples of *useful* results, those of trajectories that failed are examples
of *noisy* ones. Each trajectory is stored whole (response, answer, metrics, label) with the documents
every search returned, recorded by a thin wrapper around the engine since the rollout keeps only queries.

Questions are processed in chunks and appended (fsynced) as they finish; a rerun keeps the questions
stored with all their samples and redoes the rest, so an interrupted collection continues where it
stopped (interrupted between chunks, it ends with the very file an uninterrupted run writes). Put the engine behind `--cache` and a
rerun costs no new engine calls.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zerosearch.data import QARecord
from zerosearch.engines.base import Document, SearchEngine, SearchRequest
from zerosearch.io import append_jsonl, atomic_write_jsonl, read_jsonl
from zerosearch.rollout import RolloutConfig, rollout


class RecordingEngine(SearchEngine):
    """Passes searches through and remembers the documents per (row_id, query)."""

    def __init__(self, engine: SearchEngine):
        self.engine, self.name = engine, engine.name
        self.seen: dict[tuple[str | None, str], list[Document]] = {}

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        results = self.engine.search(requests)
        for r, docs in zip(requests, results):
            self.seen[(r.row_id, r.query)] = docs
        return results

    def identity(self) -> str:
        return self.engine.identity()


def label(metrics: dict[str, float], by: str, threshold: float) -> str:
    """'positive' when the answer is right (EM = 1, or F1 >= threshold), else 'negative'."""
    if by not in ("em", "f1"):
        raise ValueError(f"label by 'em' or 'f1', got {by!r}")
    return "positive" if metrics[by] >= (1.0 if by == "em" else threshold) else "negative"


def collect(records: Sequence[QARecord], backend: Any, tokenizer: Any, engine: SearchEngine, cfg: RolloutConfig,
            out: str | Path, *, label_by: str = "em", threshold: float = 0.5, chunk: int = 16, seed: int = 0,
            progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Append one JSON line per trajectory to `out`; returns counts over the whole file."""
    if engine.sees_gold_answers:
        raise ValueError(f"collection needs a real engine; {engine.identity()!r} is a simulator")
    out = Path(out)
    rows = read_jsonl(out, tolerate_partial_tail=True) if out.exists() else []
    per_question = Counter(row["id"] for row in rows)
    done = {q for q, n in per_question.items() if n >= cfg.n}
    if len(done) < len(per_question) or (out.exists() and not out.read_bytes().endswith(b"\n")):
        # An interrupted chunk: keep only whole questions (the others are redone), atomically.
        atomic_write_jsonl(out, [row for row in rows if row["id"] in done])
    todo = [r for r in records if r.id not in done]
    recorder = RecordingEngine(engine)
    for b in range(0, len(todo), chunk):
        part = todo[b: b + chunk]
        # The chunk's position in the full list seeds it, so a resumed run samples what the first would have.
        trajs = rollout(part, backend, tokenizer, recorder, cfg, seed=seed * 100_003 + records.index(part[0]))
        for t in trajs:
            append_jsonl(out, {
                "id": t.row_id, "sample": t.sample, "question": t.question, "golden_answers": t.golden_answers,
                "data_source": t.data_source, "response": t.response, "answer": t.answer, **t.metrics,
                "label": label(t.metrics, label_by, threshold), "turns": t.turns, "end": t.end,
                "searches": [{"query": q, "documents": [d.to_dict() for d in recorder.seen[(t.row_id, q)]]}
                             for q in t.queries]})
        recorder.seen.clear()
        if progress:
            progress(len(done) + b + len(part), len(done) + len(todo))
    rows = read_jsonl(out) if out.exists() else []
    return {"trajectories": len(rows), "positive": sum(r["label"] == "positive" for r in rows),
            "negative": sum(r["label"] == "negative" for r in rows), "searches": sum(len(r["searches"]) for r in rows),
            "questions": len({r["id"] for r in rows}), "new_questions": len(todo)}
