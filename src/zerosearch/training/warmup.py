"""The policy's cold start: a short SFT on demonstrations of a search agent at work.

A 135M model given the search-agent prompt almost never writes `<search>` or `<answer>` (measured: 0 of
32 samples at T=1 on the synthetic world), so every GRPO group scores 0 and RL has no signal to follow.
Like DeepSeek-R1's cold start, demonstrations teach the protocol first. They must also teach *searching*:
a cold start that only ever pastes the question and answers (this module before round 3) gave a policy
that searched exactly once on every question, 87.5 EM on one-hop and 5.4 EM on two-hop questions.
Four kinds, their shares set by `ColdStartMix`:

    two_hop       <search> Kasat Shipyards founder </search>  <information> ... Varnel Odrasi ... </information>
                  <think> The founder is Varnel Odrasi. </think>
                  <search> Varnel Odrasi birth year </search> <information> ... </information>  <answer> 1874 </answer>
    reformulated  one hop, the query the entity and relation ("Varnel Odrasi birthplace"), not the question
    recovery      a first query that misses (part of the name), then the better one
    verbatim      the question itself as the query (where a question has no plan, or by choice)

Every document comes from a real engine, never from gold passages handed over; a demonstration is kept
only when it works: each query's top-k holds the passage the plan says it must (`zerosearch.data.query_plans`),
a bridge hop's documents name the bridge, and the last documents hold the gold answer (the recovery
demonstration's first query must *miss*). The policy learns to answer from documents, never from nowhere.
Loss goes on the policy's own text only; the `<information>` blocks are inserted, as in the rollout.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zerosearch.data.qa import QARecord
from zerosearch.engines.base import Document, SearchEngine, SearchRequest, format_documents
from zerosearch.prompts import INFORMATION, SEARCH_AGENT
from zerosearch.data.query_plans import Hop, plan
from zerosearch.reward import normalize_answer

KINDS = ("two_hop", "reformulated", "recovery", "verbatim")
_ANSWER = "<think> The documents answer the question. </think>\n<answer> {gold} </answer>"


@dataclass
class ColdStartMix:
    """Shares of the demonstrations by kind; the one-hop rest (1 - the three) is `reformulated`."""

    two_hop: float = 0.5
    recovery: float = 0.1
    verbatim: float = 0.1

    def __post_init__(self) -> None:
        for name in ("two_hop", "recovery", "verbatim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ValueError(f"cold-start mix: {name} must be a share in [0, 1], got {v!r}")
        if self.two_hop + self.recovery + self.verbatim > 1 + 1e-9:
            raise ValueError(f"cold-start mix: two_hop + recovery + verbatim must be <= 1, got "
                             f"{self.two_hop} + {self.recovery} + {self.verbatim}")

    def targets(self, examples: int) -> dict[str, int]:
        n = {"two_hop": round(examples * self.two_hop), "recovery": round(examples * self.recovery),
             "verbatim": round(examples * self.verbatim)}
        return {"two_hop": n["two_hop"], "reformulated": max(0, examples - sum(n.values())),
                "recovery": n["recovery"], "verbatim": n["verbatim"]}


def corpus_titles(path: str | Path) -> dict[str, str]:
    """Passage id -> title of a JSONL corpus: where a plan finds the names of its supporting passages."""
    from zerosearch.engines.corpus import passage
    from zerosearch.io import read_jsonl

    out = {}
    for i, row in enumerate(read_jsonl(path), start=1):
        pid, title, _ = passage(row, f"{path}:{i}")
        if pid is not None:
            out[pid] = title
    return out


# --- checks on retrieved documents ---------------------------------------------------------------------

def _hit(docs: list[Document], support: str) -> bool:
    return any(d.id == support or d.title == support for d in docs)


def _mentions(docs: list[Document], name: str) -> bool:
    return normalize_answer(name) in normalize_answer(format_documents(docs))


def _gold_in(docs: list[Document], rec: QARecord) -> str | None:
    text = normalize_answer(format_documents(docs))
    return next((g for g in rec.golden_answers if normalize_answer(g) and normalize_answer(g) in text), None)


def _search(engine: SearchEngine, items: list[tuple[QARecord, str]], k: int) -> list[list[Document]]:
    return engine.search([SearchRequest(q, k=k, row_id=r.id) for r, q in items]) if items else []


def _demo(rec: QARecord, kind: str, turns: list[tuple[str, str, list[Document]]], gold: str) -> dict[str, Any]:
    """An SFT example: each (think, query, documents) turn, then the answer."""
    segments: list[list[Any]] = []
    for think, query, docs in turns:
        segments += [[f"<think> {think} </think>\n<search> {query} </search>", True],
                     [INFORMATION.format(documents=format_documents(docs)), False]]
    segments.append([_ANSWER.format(gold=gold), True])
    return {"prompt": SEARCH_AGENT.format(question=rec.question.strip()), "segments": segments, "id": rec.id,
            "kind": kind, "queries": [q for _, q, _ in turns]}


def bad_query(hop: Hop) -> str | None:
    """A plausible first query that names the entity only in part (its longest word dropped): what a policy
    that half-copies a name writes. None for one-word names."""
    words = hop.entity.split()
    if len(words) < 2:
        return None
    longest = max(range(len(words)), key=lambda i: len(words[i]))
    return " ".join([*words[:longest], *words[longest + 1:], hop.relation]).strip()


# --- the four builders: records in, (demonstrations, drop reasons) out ---------------------------------

Built = tuple[list[dict[str, Any]], Counter]


def _verbatim(recs: list[QARecord], engine: SearchEngine, k: int) -> Built:
    out, dropped = [], Counter()
    for rec, docs in zip(recs, _search(engine, [(r, r.question.strip()) for r in recs], k)):
        gold = _gold_in(docs, rec)
        if gold is None:
            dropped["answer not retrieved"] += 1
            continue
        out.append(_demo(rec, "verbatim", [("I do not know this, so I will search.", rec.question.strip(), docs)], gold))
    return out, dropped


def _reformulated(recs: list[QARecord], plans: list[list[Hop]], engine: SearchEngine, k: int) -> Built:
    out, dropped = [], Counter()
    for rec, p, docs in zip(recs, plans, _search(engine, [(r, p[0].query) for r, p in zip(recs, plans)], k)):
        gold = _gold_in(docs, rec)
        if not _hit(docs, p[0].support) or gold is None:
            dropped["query missed its passage" if not _hit(docs, p[0].support) else "answer not retrieved"] += 1
            continue
        out.append(_demo(rec, "reformulated", [(f"I need {p[0].need}.", p[0].query, docs)], gold))
    return out, dropped


def _recovery(recs: list[QARecord], plans: list[list[Hop]], engine: SearchEngine, k: int) -> Built:
    out, dropped = [], Counter()
    items = [(r, p, bad_query(p[0])) for r, p in zip(recs, plans)]
    dropped["no partial name"] = sum(b is None for _, _, b in items)
    items = [(r, p, b) for r, p, b in items if b is not None]
    first = _search(engine, [(r, b) for r, _, b in items], k)  # type: ignore[misc]
    second = _search(engine, [(r, p[0].query) for r, p, _ in items], k)
    for (rec, p, bad), d1, d2 in zip(items, first, second):
        gold = _gold_in(d2, rec)
        if _hit(d1, p[0].support):
            dropped["partial query found the passage anyway"] += 1
        elif not _hit(d2, p[0].support) or gold is None:
            dropped["full query missed"] += 1
        else:
            out.append(_demo(rec, "recovery", [
                (f"I need {p[0].need}.", bad, d1),  # type: ignore[list-item]
                (f"These documents are not about {p[0].entity}. I will search again with the full name.",
                 p[0].query, d2)], gold))
    return out, dropped


def _two_hop(recs: list[QARecord], plans: list[list[Hop]], engine: SearchEngine, k: int) -> Built:
    out, dropped = [], Counter()
    first = _search(engine, [(r, p[0].query) for r, p in zip(recs, plans)], k)
    ok = []
    for rec, p, d1 in zip(recs, plans, first):
        if not _hit(d1, p[0].support):
            dropped["first query missed its passage"] += 1
        elif p[0].bridge is not None and not _mentions(d1, p[0].bridge):  # comparisons have no bridge
            dropped["bridge not in the first documents"] += 1
        else:
            ok.append((rec, p, d1))
    second = _search(engine, [(r, p[1].query) for r, p, _ in ok], k)
    for (rec, p, d1), d2 in zip(ok, second):
        gold = _gold_in(d2, rec)
        if not _hit(d2, p[1].support):
            dropped["second query missed its passage"] += 1
        elif gold is None:
            dropped["answer not retrieved"] += 1
        else:
            found = (f"The {p[0].relation} is {p[0].bridge}." if p[0].relation and p[0].bridge else
                     f"The documents mention {p[0].bridge}." if p[0].bridge else f"I have {p[0].entity}.")
            out.append(_demo(rec, "two_hop", [(f"First I need {p[0].need}.", p[0].query, d1),
                                              (found + f" Now I need {p[1].need}.", p[1].query, d2)], gold))
    return out, dropped


def demonstrations(records: Sequence[QARecord], engine: SearchEngine, *, examples: int,
                   mix: ColdStartMix | None = None, titles: Mapping[str, str] | None = None, k: int = 3,
                   seed: int = 0, batch: int = 128) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Up to `examples` demonstrations in the mix's shares, from `records` in a seeded order; and a report per
    kind: target, kept, and why the others were dropped. A kind whose records run out stays short (the
    report says so) rather than being filled with another kind."""
    mix = mix or ColdStartMix()
    targets = mix.targets(examples)
    order = list(records)
    random.Random(seed).shuffle(order)
    planned = [(r, plan(r, titles or {})) for r in order]
    pools = {"two_hop": [(r, p) for r, p in planned if p is not None and len(p) == 2],
             "one_hop": [(r, p) for r, p in planned if p is None or len(p) == 1]}
    kept: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    dropped: dict[str, Counter] = {kind: Counter() for kind in KINDS}

    def short(kind: str) -> int:
        return targets[kind] - len(kept[kind])

    two = pools["two_hop"]
    while two and short("two_hop") > 0:
        chunk, two = two[:max(batch, short("two_hop"))], two[max(batch, short("two_hop")):]
        d, why = _two_hop([r for r, _ in chunk], [p for _, p in chunk], engine, k)  # type: ignore[misc]
        kept["two_hop"] += d[:max(short("two_hop"), 0)]
        dropped["two_hop"] += why
    one = pools["one_hop"]
    while one and any(short(kind) > 0 for kind in KINDS[1:]):
        chunk, one = one[:batch], one[batch:]
        # Deal the chunk to the kinds still short, in proportion to what each still needs; a record without
        # a plan can only be a verbatim demonstration.
        want = {kind: max(short(kind), 0) for kind in KINDS[1:]}
        todo: dict[str, list[tuple[QARecord, Any]]] = {kind: [] for kind in KINDS[1:]}
        for i, (r, p) in enumerate(chunk):
            open_kinds = [kind for kind in KINDS[1:] if want[kind] > 0 and (p is not None or kind == "verbatim")]
            if not open_kinds:
                continue
            kind = max(open_kinds, key=lambda kd: want[kd] / max(1, len(todo[kd]) + 1))
            todo[kind].append((r, p))
        for kind, items in todo.items():
            if not items:
                continue
            rs, ps = [r for r, _ in items], [p for _, p in items]
            d, why = (_verbatim(rs, engine, k) if kind == "verbatim" else
                      _reformulated(rs, ps, engine, k) if kind == "reformulated" else _recovery(rs, ps, engine, k))
            kept[kind] += d[:max(short(kind), 0)]
            dropped[kind] += why
    demos = [d for kind in KINDS for d in kept[kind]]
    random.Random(seed + 1).shuffle(demos)  # kinds interleaved, so every SFT batch sees a mix
    report = {kind: {"target": targets[kind], "kept": len(kept[kind]), "dropped": dict(dropped[kind])}
              for kind in KINDS}
    return demos, report


def report_lines(report: Mapping[str, Any]) -> list[str]:
    lines = []
    for kind, r in report.items():
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(r["dropped"].items(), key=lambda x: -x[1]) if n)
        lines.append(f"  {kind}: {r['kept']} of {r['target']} wanted" + (f" (dropped: {why})" if why else ""))
    return lines


def warm_start(model: str, records: Sequence[QARecord], engine: SearchEngine, out: str | Path, cfg: Any, *,
               examples: int, mix: ColdStartMix | None = None, titles: Mapping[str, str] | None = None,
               k: int = 3, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """The whole cold start: up to `examples` demonstrations in out/demos.jsonl (with their kind and queries;
    out/demos-report.json says what was kept and dropped), then SFT of `model` on them (cfg: SFTConfig).
    Returns zerosearch.training.sft's summary, plus the report; its "model" is the warmed-up policy."""
    import json

    from zerosearch.io import atomic_write_jsonl, atomic_write_text
    from zerosearch.training.sft import sft

    demos, report = demonstrations(records, engine, examples=examples, mix=mix, titles=titles, k=k, seed=cfg.seed)
    if not demos:
        raise ValueError("no demonstration could be built: the engine retrieved none of the plans' passages or "
                         "answers (is --corpus the corpus these questions were written about?)")
    atomic_write_jsonl(Path(out) / "demos.jsonl", demos)
    atomic_write_text(Path(out) / "demos-report.json", json.dumps(report, indent=1) + "\n")
    print(f"demonstrations: {len(demos)}", *report_lines(report), sep="\n")
    return {**sft(model, demos, out, cfg, resume=resume, progress=progress), "demonstrations": report}
