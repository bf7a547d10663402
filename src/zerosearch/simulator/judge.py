"""How good is a simulator? Measured, never assumed.

For each dev question the same query (the question itself, and optionally the queries a policy asked
about it in collected trajectories) goes to the simulator twice, asking for useful and for noisy
documents (told the question and gold answer, as in training), and once to a real engine. Each set of
documents is scored by:

- answer in docs: some gold answer appears in the documents (normalised, token-aligned);
- reader EM / F1: a fixed reader model answers the question from those documents alone
  (`zerosearch.evaluation.eval.answer_from_documents`, the `rag` baseline's prompt);
- complete: the result has k documents and no fallback (the simulator wrote parseable output).

Useful documents should score high, noisy ones low; the difference (useful - noisy) is the simulator's
*controllability*, and the real engine's row says how its useful documents compare with retrieval.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zerosearch.data.qa import QARecord
from zerosearch.engines.base import Document, SearchEngine, SearchRequest
from zerosearch.reward import answer_metrics, cover_exact_match, normalize_answer

COLUMNS = ("answer_in_docs", "reader_em", "reader_f1", "complete")


def answer_in_docs(docs: list[Document], golds: Sequence[str]) -> float:
    return cover_exact_match(" ".join(d.text for d in docs), golds)


def with_queries(records: Sequence[QARecord], trajectories: str | Path | None = None
                 ) -> tuple[list[QARecord], list[str]]:
    """(records, queries), parallel: each question asked as itself, then (with a `zerosearch collect`
    file) the distinct queries its trajectories searched for, matched by question id."""
    from zerosearch.simulator.build_sft import read_trajectories

    asked: dict[str, list[str]] = {r.id: [r.question] for r in records}
    seen = {r.id: {normalize_answer(r.question)} for r in records}
    if trajectories is not None:
        matched = 0
        for t in read_trajectories(trajectories):
            if t["id"] not in asked:
                continue
            matched += 1
            for s in t["searches"]:
                norm = normalize_answer(s["query"])
                if norm and norm not in seen[t["id"]]:
                    seen[t["id"]].add(norm)
                    asked[t["id"]].append(s["query"].strip())
        if not matched:
            raise ValueError(f"{trajectories}: no trajectory is about the questions judged (no question id in common)")
    pairs = [(r, q) for r in records for q in asked[r.id]]
    return [r for r, _ in pairs], [q for _, q in pairs]


def score(records: Sequence[QARecord], results: list[list[Document]], answers: list[str | None],
          k: int) -> dict[str, float]:
    n = max(len(records), 1)
    metrics = [answer_metrics(a, r.golden_answers) for a, r in zip(answers, records)]
    return {"answer_in_docs": sum(answer_in_docs(d, r.golden_answers) for d, r in zip(results, records)) / n,
            "reader_em": sum(m["em"] for m in metrics) / n, "reader_f1": sum(m["f1"] for m in metrics) / n,
            "complete": sum(len(d) == k and not any(x.meta.get("fallback") for x in d) for d in results) / n}


def judge(records: Sequence[QARecord], simulators: dict[str, SearchEngine], real: SearchEngine | None,
          reader: Any, tokenizer: Any, *, k: int = 3, queries: Sequence[str] | None = None,
          examples: int = 5) -> dict[str, Any]:
    """{"rows": {name: metrics}, "examples": [...], ...}: rows "<sim> useful", "<sim> noisy", "<sim> gap",
    "real". `queries` (parallel to `records`, which may repeat a question) default to the questions."""
    from zerosearch.evaluation.eval import answer_from_documents

    records = list(records)
    queries = list(queries) if queries is not None else [r.question for r in records]
    if len(queries) != len(records):
        raise ValueError(f"{len(queries)} queries for {len(records)} questions")
    if real is not None and real.is_simulator:
        raise ValueError(f"the real engine's row needs a real engine; {real.identity()!r} is a simulator")
    questions = [r.question for r in records]
    sources: dict[str, list[list[Document]]] = {}
    for name, sim in simulators.items():
        for mode in ("useful", "noisy"):
            sources[f"{name} {mode}"] = sim.search([
                SearchRequest(q, k=k, row_id=r.id, question=r.question, golden_answers=list(r.golden_answers),
                              mode=mode) for q, r in zip(queries, records)])
    if real is not None:
        sources["real"] = real.search([SearchRequest(q, k=k, row_id=r.id) for q, r in zip(queries, records)])
    rows: dict[str, dict[str, float]] = {}
    for name, results in sources.items():
        rows[name] = score(records, results, answer_from_documents(reader, tokenizer, questions, results), k)
    for name in simulators:
        u, n = rows[f"{name} useful"], rows[f"{name} noisy"]
        rows[f"{name} gap"] = {c: u[c] - n[c] for c in COLUMNS}
    shown = [{"question": r.question, "golden_answers": r.golden_answers, "query": q,
              **{name: [d.text for d in sources[name][i]] for name in sources}}
             for i, (r, q) in enumerate(zip(records[:examples], queries))]
    order = [f"{s} {m}" for s in simulators for m in ("useful", "noisy", "gap")] + (["real"] if real else [])
    return {"rows": {name: rows[name] for name in order}, "examples": shown,
            "questions": len({r.id for r in records}), "queries": len(records), "k": k}


def markdown(result: dict[str, Any]) -> str:
    lines = ["| documents | answer in docs % | reader EM % | reader F1 % | docs written ok % |",
             "|---|---|---|---|---|"]
    for name, m in result["rows"].items():
        sign = "+" if name.endswith(" gap") else ""
        cells = [f"{100 * m[c]:{sign}.1f}" for c in COLUMNS]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += ["", f"{result['queries']} queries about {result['questions']} questions, k = {result['k']}; "
              "gap = useful - noisy (the simulator's controllability); docs written ok = k documents, no fallback."]
    return "\n".join(lines)
