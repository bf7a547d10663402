"""Evaluation by hops and by behaviour: is the agent searching, or pasting the question?

An average EM hides what matters for a search agent. A policy that copies every question into the engine
and answers from the top-k scores well on one-hop questions and fails two-hop ones, where the question
does not name the passage holding the answer. So `zerosearch eval` (and the demo's and the replication's
reports) split every search-agent metric by the question's hops and add two measures of behaviour:

    searches / question   how often the agent queried the engine
    query-copy rate       the share of its queries that equal the question (after answer normalisation:
                          case, punctuation and articles do not count as reformulating)

Rows are `zerosearch.evaluation.eval` prediction rows: `hops` (None where the data does not say), `em`, `f1`,
`searches`, `queries`, `question`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from zerosearch.reward import normalize_answer


def is_copy(query: str, question: str) -> bool:
    return normalize_answer(query) == normalize_answer(question)


def query_copy_rate(rows: Iterable[Mapping[str, Any]]) -> float | None:
    """Copied queries / all queries of the rows; None when they issued no query at all."""
    copies = total = 0
    for r in rows:
        for q in r.get("queries") or []:
            total += 1
            copies += is_copy(q, r["question"])
    return copies / total if total else None


def hop_label(hops: Any) -> str:
    """2 -> "2-hop"; a non-empty string is a group name of its own (e.g. HotpotQA's "bridge")."""
    if isinstance(hops, str) and hops:
        return hops
    return f"{hops}-hop" if isinstance(hops, int) and not isinstance(hops, bool) and hops > 0 else "unknown"


def by_hops(rows: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """{method: {"1-hop" | "2-hop" | ... | "unknown": {n, em, f1, searches, copy_rate}}}, hop groups in order."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for m in methods:
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for r in rows:
            if r["method"] == m:
                groups.setdefault(hop_label(r.get("hops")), []).append(r)
        out[m] = {label: _stats(groups[label]) for label in sorted(groups, key=_order)}
    return out


def _order(label: str) -> tuple[int, str]:
    head = label.split("-")[0]
    return (int(head), label) if head.isdigit() else (10**6, label)


def _stats(rs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    n = len(rs)
    return {"n": n, "em": sum(float(r["em"]) for r in rs) / n, "f1": sum(float(r["f1"]) for r in rs) / n,
            "searches": sum(float(r["searches"]) for r in rs) / n, "copy_rate": query_copy_rate(rs)}


def hops_markdown(table: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """By-hops table: one row per (method, hops)."""
    lines = ["| method | hops | n | EM | F1 | searches / question | query-copy rate |", "|---" * 7 + "|"]
    for m, groups in table.items():
        for label, s in groups.items():
            copy = "-" if s["copy_rate"] is None else f"{100 * s['copy_rate']:.0f}%"
            lines.append(f"| {m} | {label} | {s['n']} | {100 * s['em']:.1f} | {100 * s['f1']:.1f} | "
                         f"{s['searches']:.2f} | {copy} |")
    return "\n".join(lines)


def paired_markdown(rows: Sequence[Mapping[str, Any]], labels: Sequence[str], ref: str) -> str:
    """Each other policy/method against `ref` on the same questions, per hop: questions
    turned right / wrong, the EM change with its 95% CI, McNemar's exact p (zerosearch.evaluation.stats)."""
    from zerosearch.evaluation.stats import mcnemar_exact, paired_delta_ci

    if ref not in labels:
        return ""
    em = {(r["method"], r["id"]): float(r["em"]) for r in rows}
    hop = {r["id"]: hop_label(r.get("hops")) for r in rows}
    lines = [f"Paired against `{ref}` (same questions):", "",
             "| policy | hops | right / wrong | EM change, points [95% CI] | McNemar p |", "|---|---|---|---|---|"]
    for label in labels:
        if label == ref:
            continue
        for h in sorted(set(hop.values())):
            ids = [q for q in hop if hop[q] == h and (label, q) in em and (ref, q) in em]
            gained = sum(em[(label, q)] > em[(ref, q)] for q in ids)
            lost = sum(em[(label, q)] < em[(ref, q)] for q in ids)
            d, lo, hi = paired_delta_ci(gained, lost, max(len(ids), 1))
            lines.append(f"| {label} | {h} | +{gained} / -{lost} | {100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] | "
                         f"{mcnemar_exact(gained, lost):.3f} |")
    return "\n".join(lines)
