"""The simulator's leak-guard pass: which results leak the gold answer, and what the engine serves instead.

`zerosearch.engines.leak` judges one result; this runs that judgement over one `search` call, asks the
answer-blind referee for a second opinion, and flags, clears or replaces results in place. Apart from
`SimulatedEngine` so the engine reads as prompt, generate, parse, and this decision reads on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from zerosearch.engines import Counters
from zerosearch.engines.base import DocMode, Document, SearchRequest
from zerosearch.engines.leak import LeakGuard, LeakVerdict
from zerosearch.engines.sim_backends import Generation
from zerosearch.engines.sim_prompts import ParseInfo

# One request's result: its documents, the generation they came from, and the parse (None: a fallback).
SimResult = tuple[list[Document], Generation, ParseInfo | None]


def _texts(docs: list[Document]) -> list[str]:
    return [f"{d.title} {d.text}" for d in docs]


def guard_results(requests: Sequence[SearchRequest], results: dict[int, SimResult], modes: dict[int, DocMode], *,
                  guard: LeakGuard, policy: str, referee: bool, counters: Counters,
                  blind: Callable[[list[int]], dict[int, SimResult]]) -> None:
    """Flag (with `policy="replace"`, swap) the leaking results in `results`, in place.

    A candidate is a result `guard` says states a gold answer the query did not bring. `blind(indices)`
    generates those requests again answer-blind in the same mode; with `referee`, a candidate whose blind
    result states the answer too is cleared (the query brings it by itself), else it is flagged. "replace"
    serves the blind result for every flagged one (generated even without `referee`).
    """
    candidates: dict[int, LeakVerdict] = {}
    for i, (docs, _, info) in results.items():
        r = requests[i]
        if info is None:  # a fallback: nothing was written
            continue
        verdict = guard.check(r.query, r.question or "", r.golden_answers or [], _texts(docs), modes[i])
        if verdict.candidate:
            candidates[i] = verdict
    counters.add(leak_suspicious=len(candidates))
    if not candidates:
        return
    blinded = blind(list(candidates)) if referee or policy == "replace" else {}
    for i, verdict in candidates.items():
        r = requests[i]
        if referee and i in blinded and blinded[i][2] is not None and guard.stating_docs(
                _texts(blinded[i][0]), r.question or "", r.golden_answers or []):
            # An engine that does not know the answer writes it too: the query brings it by itself.
            counters.add(leak_cleared=1)
            continue
        counters.add(leak_flagged=1, leak_docs=len(verdict.doc_hits))
        for j in verdict.doc_hits:
            results[i][0][j].meta.update(leak=True, leak_reason=verdict.reason)
        if policy == "replace":
            for d in blinded[i][0]:
                d.meta["leak_replaced"] = True
            results[i] = blinded[i]
            counters.add(leak_replaced=1)
