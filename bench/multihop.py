"""Does the cold start teach searching? Round 2's cold start against round 3's, by hops, with real BM25.

Policies (each a cold start of the same SmolLM2-135M, `zerosearch.demo.cold_start`, cached by setting):

    verbatim    round 2's cold start: every demonstration searches the question verbatim once (128
                demonstrations, 10 SFT steps, lr 5e-5, fp32: the demo's setting before round 3)
    multi-hop   round 3's: two-hop chains, reformulated one-hop queries, recoveries and some verbatim ones
                in the `DemoConfig` shares (--examples, --steps, --lr)

plus the untrained model. Each is evaluated as a search agent with real BM25 (k=3) on the same held-out
test questions of the world (greedy), and RAG (the question's top-3, then answer) with the untrained model
as the retrieve-then-read baseline. Reports EM, searches per question and query-copy rate for one-hop and
two-hop questions (`zerosearch.evaluation.behaviour`). Everything resumes: cold starts are cached, evaluations append.

    python bench/multihop.py [--eval-size 128] [--steps 48] [--examples 400] [--out runs/multihop]

Prints one JSON line; `--policy NAME=PATH` adds a policy trained elsewhere (e.g. an RL arm's final/).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import time
from datetime import date
from pathlib import Path
from typing import Any

from zerosearch.demo import DemoConfig, cold_start

# The turn budget fits a two-hop chain and a recovery: 3 searches, then the forced answer; 64 tokens per
# turn (a two-hop demonstration's longest turn is 52 tokens).
MAX_TURNS, MAX_TOKENS = 3, 64


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval-size", type=int, default=128)
    ap.add_argument("--examples", type=int, default=400)
    ap.add_argument("--steps", type=int, default=48)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="untrained,verbatim,multi-hop", help="policies to evaluate, in order")
    ap.add_argument("--policy", action="append", default=[], metavar="NAME=PATH", help="another policy to evaluate")
    ap.add_argument("--out", default="runs/multihop")
    ap.add_argument("--results", default=None, help="also write the table to this markdown file")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from zerosearch.evaluation.behaviour import by_hops, hops_markdown, paired_markdown
    from zerosearch.data.qa import load_qa, subsample
    from zerosearch.engines import EngineConfig, build_engine
    from zerosearch.evaluation.eval import EvalConfig, run_eval
    from zerosearch.agent.generation import HFBackend
    from zerosearch.io import read_jsonl
    from zerosearch.models import load
    from zerosearch.agent.prefix_cache import budget_tokens
    from zerosearch.data.world import cached_world

    t0 = time.perf_counter()
    world = cached_world()
    bm25 = build_engine(EngineConfig.from_dict({"name": "bm25", "corpus": str(world / "corpus.jsonl"), "k": 3}))
    test = subsample(load_qa(world / "test.jsonl"), args.eval_size, args.seed)
    base = DemoConfig(seed=args.seed)
    settings = {
        "verbatim": dataclasses.replace(base, warmup_examples=128, warmup_steps=10, warmup_lr=5e-5, two_hop_share=0.0,
                                        recovery_share=0.0, verbatim_share=1.0, precision="fp32"),
        "multi-hop": dataclasses.replace(base, warmup_examples=args.examples, warmup_steps=args.steps,
                                         warmup_batch=args.batch, warmup_lr=args.lr),
    }
    wanted = [p for p in args.only.split(",") if p]
    policies: dict[str, str] = {}
    for name in wanted:
        if name == "untrained":
            policies[name] = base.model
        elif name in settings:
            print(f"== cold start {name}", flush=True)
            policies[name] = cold_start(settings[name], world, bm25, progress=False)
        else:
            raise SystemExit(f"unknown policy {name!r}")
    for spec in args.policy:
        name, _, path = spec.partition("=")
        policies[name] = path

    ecfg = EvalConfig(methods=["search-agent"], k=3, max_turns=MAX_TURNS, max_new_tokens=MAX_TOKENS,
                      answer_tokens=24, seed=args.seed, chunk=16)
    rows: list[dict[str, Any]] = []
    jobs = [("untrained", "rag")] if "untrained" in policies else []
    jobs += [(name, "search-agent") for name in policies]
    for name, method in jobs:
        print(f"== eval {name} {method}", flush=True)
        model, tok = load(policies[name])
        backend = HFBackend(model.eval(), tok, batch_size=8, kv_cache_tokens=budget_tokens(ecfg.chunk, ecfg.max_total_tokens))
        folder = Path(args.out) / "eval" / f"{name}-{method}"
        run_eval(test, backend, tok, bm25, dataclasses.replace(ecfg, methods=[method]), folder,
                 meta={"model": policies[name]})
        rows += [{**r, "method": f"{name} / {method}"} for r in read_jsonl(folder / "predictions.jsonl")]
    bm25.close()
    labels = [f"{n} / {m}" for n, m in jobs]
    table = by_hops(rows, labels)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    md = hops_markdown(table) + "\n\n" + paired_markdown(rows, labels, ref="multi-hop / search-agent")
    print(md)
    if args.results:
        Path(args.results).write_text(md + "\n", encoding="utf-8")
    figures: dict[str, Any] = {"bench": "multihop", "date": date.today().isoformat(), "commit": commit,
                               "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
                               "eval_questions": len(test), "minutes": round((time.perf_counter() - t0) / 60, 1)}
    for label, groups in table.items():
        for hop, s in groups.items():
            for key in ("em", "searches", "copy_rate"):
                figures[f"{key}/{label}/{hop}"] = None if s[key] is None else round(s[key], 4)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
