"""Collect search trajectories against a real engine, labelled by whether they reached the answer.

The paper's simulation data: a policy searches a real engine; the query-document pairs of trajectories
that answered correctly are examples of *useful* results, those of trajectories that failed are examples
of *noisy* ones. Each trajectory is stored whole (response, answer, metrics, label) with the documents
every search returned (the rollout keeps them per trajectory, so each sample has its own).

Questions are processed in fixed chunks and each chunk's trajectories are appended (fsynced) when it
finishes. A chunk is the unit of sampling (its batch and its seed decide every sample in it), so it is
also the unit of resume: a rerun keeps the chunks whose questions are all stored with all their samples
and redoes every other chunk whole, so an interrupted collection ends with the very file an
uninterrupted run writes. Put the engine behind `--cache` and a rerun costs no new engine calls.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zerosearch.data.qa import QARecord
from zerosearch.engines.base import SearchEngine
from zerosearch.io import append_jsonl, read_jsonl, truncate_jsonl
from zerosearch.agent.rollout import RolloutConfig, rollout


def label(metrics: dict[str, float], by: str, threshold: float) -> str:
    """'positive' when the answer is right (EM = 1, or F1 >= threshold), else 'negative'."""
    return "positive" if metrics[by] >= (1.0 if by == "em" else threshold) else "negative"


def collect(records: Sequence[QARecord], backend: Any, tokenizer: Any, engine: SearchEngine, cfg: RolloutConfig,
            out: str | Path, *, label_by: str = "em", threshold: float = 0.5, chunk: int = 16, seed: int = 0,
            progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Append one JSON line per trajectory to `out`; returns counts over the whole file."""
    if engine.is_simulator:
        raise ValueError(f"collection needs a real engine; {engine.identity()!r} is a simulator")
    if label_by not in ("em", "f1"):  # checked before any generation, not after the first chunk
        raise ValueError(f"label by 'em' or 'f1', got {label_by!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    repeated = [i for i, n in Counter(r.id for r in records).items() if n > 1]
    if repeated:  # the file is keyed by question id
        raise ValueError(f"question ids must be unique; repeated: {', '.join(repeated[:5])}")
    out = Path(out)
    stored = Counter(row["id"] for row in truncate_jsonl(out))
    chunks = [(b, list(records[b: b + chunk])) for b in range(0, len(records), chunk)]
    todo = [(b, part) for b, part in chunks if any(stored[r.id] < cfg.n for r in part)]
    redo = {r.id for _, part in todo for r in part}
    truncate_jsonl(out, keep=lambda row: row["id"] not in redo)  # what an interrupted chunk left behind
    done = len(records) - len(redo)
    for b, part in todo:
        # The chunk's position in the full list seeds it, so a resumed run samples what the first would have.
        trajs = rollout(part, backend, tokenizer, engine, cfg, seed=seed * 100_003 + b)
        for t in trajs:
            append_jsonl(out, {
                "id": t.row_id, "sample": t.sample, "question": t.question, "golden_answers": t.golden_answers,
                "data_source": t.data_source, "response": t.response, "answer": t.answer, **t.metrics,
                "label": label(t.metrics, label_by, threshold), "turns": t.turns, "end": t.end,
                "searches": [{"query": q, "documents": [d.to_dict() for d in docs]}
                             for q, docs in zip(t.queries, t.documents)]})
        done += len(part)
        if progress:
            progress(done, len(records))
    rows = read_jsonl(out) if out.exists() else []
    return {"trajectories": len(rows), "positive": sum(r["label"] == "positive" for r in rows),
            "negative": sum(r["label"] == "negative" for r in rows), "searches": sum(len(r["searches"]) for r in rows),
            "questions": len({r["id"] for r in rows}), "new_questions": len(redo)}
