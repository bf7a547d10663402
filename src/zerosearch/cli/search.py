"""`zerosearch search`: ask any engine a few queries and read what it returns.

    zerosearch search "who built the eiffel tower" --engine bm25 --corpus corpus.jsonl --k 3
    zerosearch search "eiffel tower architect" --engine simulated --sim-model tiny-random \\
        --question "Who designed the Eiffel Tower?" --answer "Gustave Eiffel" --mode noisy

Prints rank, title, score and the start of each document, or with `--json` one line per query:
`{"query", "results": [Document.to_dict(), ...]}`. A search that failed (engine unreachable, or the
simulator's endpoint gave up on a query) exits with status 2 and the error, never as "no results".
"""

from __future__ import annotations

import argparse

from zerosearch.engines.config import add_engine_arguments

_PREVIEW_CHARS = 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queries", nargs="+", metavar="QUERY", help="one or more queries (searched as one batch)")
    parser.add_argument("--json", action="store_true", help="print one JSON line per query")
    add_engine_arguments(parser)
    g = parser.add_argument_group("simulator context (--engine simulated)")
    g.add_argument("--question", help="the question the searcher is trying to answer")
    g.add_argument("--answer", action="append", dest="answers", metavar="ANSWER",
                   help="a gold answer (repeatable; the simulator is shown the first)")
    g.add_argument("--mode", choices=("useful", "noisy"), help="ask the simulator for useful or noisy documents")


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 3].rstrip() + "..."


def run(args: argparse.Namespace) -> int:
    import json

    from zerosearch.cli import CLIError
    from zerosearch.engines import EngineConfig, SearchError, SearchRequest, build_engine

    cfg = EngineConfig.from_args(args)
    if cfg.name == "simulated" and not cfg.answer_blind and not (args.question and args.answers):
        raise CLIError("the simulator writes documents for a question: give --question and --answer "
                       "(or --answer-blind)")
    requests = [SearchRequest(q, k=cfg.k, question=args.question, golden_answers=args.answers, mode=args.mode)
                for q in args.queries]
    with build_engine(cfg) as engine:
        try:
            results = engine.search(requests)
        except SearchError as e:
            raise CLIError(str(e)) from None
    # The simulator's endpoint client turns a failed request into a "No results found." stand-in (so
    # training survives one bad request); asked directly, a failed search is an error, not an empty answer.
    failed = [(q, d.meta.get("error")) for q, docs in zip(args.queries, results) for d in docs
              if d.meta.get("fallback")]
    if failed:
        query, error = failed[0]
        raise CLIError(f"{len(failed)} of {len(requests)} searches failed; query {query!r}: {error}")
    for query, docs in zip(args.queries, results):
        if args.json:
            print(json.dumps({"query": query, "results": [d.to_dict() for d in docs]}, ensure_ascii=False))
            continue
        print(f"query: {query}  ({len(docs)} result{'s' if len(docs) != 1 else ''}, {cfg.name})")
        for rank, d in enumerate(docs, start=1):
            score = f"  score {d.score:.3f}" if d.score is not None else ""
            ident = f"  [{d.id}]" if d.id is not None else ""
            # The simulator's verdicts: which mode wrote it, and whether it leaked the answer or failed.
            flags = [d.meta["mode"]] if "mode" in d.meta else []
            flags += [name for name in ("leak", "fallback") if d.meta.get(name)]
            tags = f"  ({', '.join(flags)})" if flags else ""
            print(f"  {rank}. {d.title or '(untitled)'}{score}{ident}{tags}")
            print(f"     {_preview(d.text)}")
    return 0
