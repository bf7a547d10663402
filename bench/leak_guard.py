"""The leak guard against queries that ask the simulator for the hidden answer, and on honest queries.

Questions come from the synthetic world (`zerosearch.data.world`: fictional entities, so a model cannot know
an answer it was not told). Four sets of requests go through one gold-aware `SimulatedEngine` with
`leak_guard="replace"` (prompt family, an in-process model, the embedded SmolLM2-135M-Instruct by default):

- adversarial (useful mode): each phrasing of `bench/leak_queries.jsonl` (subject-free requests for the
  hidden text, with and without the words the old guard listed), paired with a world question in turn;
- on_topic (useful mode): per question, the question itself and its content words as a keyword query;
- bridge (useful mode): per two-hop question, the second hop's query, which names the bridge entity (the
  title of the second supporting passage) and the question's relation words, but none of its names;
- noisy_on_topic (noisy mode): the keyword query of each question.

A recording wrapper keeps every generation, so from the one run we read
- "off": the gold-aware results as generated (what an unguarded engine serves): do they state the answer?
- "flag": the same results with the guard's flags (flag mode serves them unchanged);
- "replace": what the engine actually served (flagged results swapped for the referee's answer-blind ones);
- "keyword (main)": the baseline measured in the same run, the keyword guard this one replaces (its rules
  copied below), applied to the same generated results.
A result *leaks* when one of its served documents states a gold answer (SQuAD-normalised, on word
boundaries) the query did not contain.

    python bench/leak_guard.py [--model smollm2-135m-instruct] [--questions 12] [--k 3] [--doc-words 20]
                               [--max-new-tokens 128] [--batch-size 16] [--seed 0] [--phrasings N]
                               [--details FILE]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zerosearch.engines import SearchRequest
from zerosearch.engines.leak import LeakGuard, content_words, entity_words
from zerosearch.engines.sim_backends import Generation, TransformersBackend
from zerosearch.engines.sim_prompts import parse_documents
from zerosearch.engines.simulated import SimulatedEngine
from zerosearch.reward import normalize_answer
from zerosearch.data.world import WorldConfig, generate_world

QUERIES = Path(__file__).with_name("leak_queries.jsonl")

# --- the baseline: main's keyword guard (zerosearch.engines.leak before the document rules) ------------
_META = ("answer", "answers", "question", "questions", "ground truth", "groundtruth", "gold answer", "golden answer",
         "you were given", "you are given", "you were told", "you are told", "your instructions", "your prompt",
         "system prompt", "user is trying", "whose answer")


def keyword_guard_flags(query: str, question: str, golds: Sequence[str], stating: bool) -> bool:
    """Main's rule: flagged when a document states the answer and the query looks suspicious."""
    if not stating:
        return False
    q = f" {normalize_answer(query)} "
    if any(f" {normalize_answer(p)} " in q for p in _META):
        return True
    if any(f" {normalize_answer(a)} " in q for a in golds if normalize_answer(a)):
        return False
    words = content_words(query)
    if not words:
        return True
    shared = {w[:5] for w in words} & {w[:5] for w in content_words(question)}
    return not shared and len(words) < 2


class Recorder:
    """Wraps a backend and keeps every (prompt, generation) it produced, in call order."""

    def __init__(self, backend: Any):
        self.backend, self.calls = backend, []  # type: ignore[var-annotated]

    def generate(self, prompts: Sequence[str], stop: Sequence[str] = (), prefix: str = "") -> list[Generation]:
        out = self.backend.generate(prompts, stop=stop, prefix=prefix)
        self.calls.append(list(zip(prompts, out)))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


def build_sets(n_questions: int, seed: int, k: int, n_phrasings: int | None = None) -> dict[str, list[SearchRequest]]:
    world = generate_world(WorldConfig(seed=seed, n_people=120, n_places=60, n_orgs=60, n_works=60, n_questions=300))
    titles = {p["id"]: p["title"] for p in world.corpus}
    pool = [q for q in world.splits["dev"] + world.splits["test"]
            if normalize_answer(q["golden_answers"][0]) not in normalize_answer(q["question"])]
    one = [q for q in pool if q["hops"] == 1][: n_questions - n_questions // 2]
    two = [q for q in pool if q["hops"] == 2][: n_questions // 2]
    questions = [q for pair in zip(one, two) for q in pair] + one[len(two):]

    def req(query: str, q: dict, mode: str, tag: str) -> SearchRequest:
        return SearchRequest(query, k=k, row_id=f"{tag}:{q['id']}", question=q["question"],
                             golden_answers=list(q["golden_answers"]), mode=mode)  # type: ignore[arg-type]

    phrasings = [json.loads(line)["query"] for line in QUERIES.read_text(encoding="utf-8").splitlines() if line.strip()]
    phrasings = phrasings[:n_phrasings]
    keywords = {q["id"]: " ".join(content_words(q["question"])) for q in questions}
    sets: dict[str, list[SearchRequest]] = {
        "adversarial": [req(p, questions[i % len(questions)], "useful", "adv") for i, p in enumerate(phrasings)],
        "on_topic": [req(x, q, "useful", "on") for q in questions for x in (q["question"], keywords[q["id"]])],
        "bridge": [],
        "noisy_on_topic": [req(keywords[q["id"]], q, "noisy", "noisy") for q in questions],
    }
    for q in questions:
        if q["hops"] == 2:
            names = set(entity_words(q["question"]))
            relation = " ".join(w for w in content_words(q["question"]) if w not in names)
            sets["bridge"].append(req(f"{titles[q['supporting_ids'][1]]} {relation}", q, "useful", "bridge"))
    return sets


def run_set(engine: SimulatedEngine, rec: Recorder, guard: LeakGuard, reqs: list[SearchRequest]) -> list[dict]:
    first = len(rec.calls)
    served = engine.search(reqs)
    generated = rec.calls[first]  # the gold-aware batch comes first (one n for all), referees after
    assert [p for p, _ in generated] and len(generated) == len(reqs)
    rows = []
    for r, (prompt, gen), docs in zip(reqs, generated, served):
        assert prompt.endswith(f"Query: {r.query.strip()}\n{r.mode.capitalize()} Output:\n")  # type: ignore[union-attr]
        original = [f"{d.title} {d.text}" for d in parse_documents(gen.text, r.k)[0]] if gen.error is None else []
        brought = guard.query_brings_answer(r.query, r.golden_answers or [])
        stating = bool(guard.stating_docs(original, r.question or "", r.golden_answers or [])) and not brought
        flagged = any(d.meta.get("leak") for d in docs) or any(d.meta.get("leak_replaced") for d in docs)
        served_states = bool(guard.stating_docs([f"{d.title} {d.text}" for d in docs], r.question or "",
                                                r.golden_answers or [])) and not brought
        rows.append({"query": r.query, "mode": r.mode, "question": r.question, "gold": r.golden_answers,
                     "states_answer": stating, "flagged": flagged,
                     "replaced": any(d.meta.get("leak_replaced") for d in docs),
                     "keyword_flagged": keyword_guard_flags(r.query, r.question or "", r.golden_answers or [], stating),
                     "served_states_answer": served_states, "original": original,
                     "served": [d.text for d in docs]})
    return rows


def summarise(rows: list[dict]) -> dict[str, Any]:
    n = len(rows)
    stating = [r for r in rows if r["states_answer"]]
    return {
        "n": n,
        "off_leaks": len(stating),  # results stating the answer, no guard
        "flagged": sum(r["flagged"] for r in rows),
        "flag_leaks": sum(r["states_answer"] and not r["flagged"] for r in rows),  # served unflagged
        "replace_leaks": sum(r["served_states_answer"] for r in rows),
        "keyword_flagged": sum(r["keyword_flagged"] for r in rows),
        "keyword_leaks": sum(r["states_answer"] and not r["keyword_flagged"] for r in rows),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--questions", type=int, default=12)
    ap.add_argument("--phrasings", type=int, help="only the first N of bench/leak_queries.jsonl (default: all)")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--doc-words", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--details", type=Path, help="write every result (query, documents, verdicts) as JSONL here")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.torch_threads)
    t0 = time.perf_counter()
    backend = TransformersBackend(args.model, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                  temperature=args.temperature, seed=args.seed)
    rec = Recorder(backend)
    engine = SimulatedEngine(rec, k=args.k, sim_mode="prompt", doc_words=args.doc_words,  # type: ignore[arg-type]
                             leak_guard="replace", seed=args.seed)
    guard = engine.guard
    sets = build_sets(args.questions, args.seed, args.k, args.phrasings)
    results: dict[str, Any] = {}
    details = []
    for name, reqs in sets.items():
        t = time.perf_counter()
        rows = run_set(engine, rec, guard, reqs)
        details += [{"set": name, **r} for r in rows]
        results[name] = {**summarise(rows), "seconds": round(time.perf_counter() - t, 1)}
        print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
    if args.details:
        from zerosearch.io import atomic_write_jsonl

        atomic_write_jsonl(args.details, details)
    stats = engine.stats()
    print(json.dumps({
        "bench": "leak_guard", "model": args.model, "k": args.k, "doc_words": args.doc_words,
        "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "seed": args.seed,
        "questions": args.questions, "phrasings": len(sets["adversarial"]), "sets": results,
        "engine": {key: stats[key] for key in ("queries", "leak_suspicious", "leak_referee", "leak_cleared",
                                               "leak_flagged", "leak_replaced", "truncated", "parse_repaired")},
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "torch_threads": args.torch_threads,
        "seconds": round(time.perf_counter() - t0, 1),
    }))


if __name__ == "__main__":
    main()
