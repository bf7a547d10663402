"""Does the search agent beat RAG on real HotpotQA questions, with the same passages?

Data: `../shared/data/hotpotqa_dev500_contexts.jsonl` (500 HotpotQA dev questions, IRCoT format); engine:
BM25 (k=3) over `../shared/data/wiki_mini_corpus.jsonl`, the pooled paragraphs of those questions (and
MuSiQue's), so the search agent and RAG read from the same passages. A seeded `--eval-size` of the
questions is held out for evaluation; the cold start's HotpotQA demonstrations come from the rest only.

Policies (SmolLM2-135M-Instruct):

    untrained   the instruct model, as RAG (the question's top-3, then answer): the baseline to beat
    world       the multi-hop cold start on the synthetic world (bench/multihop.py's, cached): transfer
    hotpot      `world` further fine-tuned on HotpotQA demonstrations built by `zerosearch.training.warmup` from the
                non-held-out questions (two-hop chains from the supporting paragraphs, verbatim searches
                where a question has no plan), mixed with replayed world demonstrations so the world skills stay

Each search-agent policy is evaluated greedily with <= 3 searches; `hotpot` also as RAG, so the agent's
gain over RAG is measured on one model too. Reported by question type (bridge / comparison / no plan, from the plan's shape) and paired
against the untrained RAG (McNemar). Everything resumes: the fine-tune is checkpointed, evaluations append.

    python bench/hotpot.py [--eval-size 128] [--steps 32] [--out runs/hotpot] [--results FILE.md]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import random
import subprocess
import time
from datetime import date
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MAX_TURNS, MAX_TOKENS = 3, 64  # as bench/multihop.py: a two-hop chain and a recovery, 64 tokens per turn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(SHARED / "hotpotqa_dev500_contexts.jsonl"))
    ap.add_argument("--corpus", default=str(SHARED / "wiki_mini_corpus.jsonl"))
    ap.add_argument("--eval-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=32, help="SFT steps of the HotpotQA fine-tune")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--replay", type=float, default=0.5, help="world demonstrations per HotpotQA demonstration")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="untrained/rag,hotpot/search-agent,hotpot/rag,world/search-agent",
                    help="the evaluations, in order (POLICY/METHOD)")
    ap.add_argument("--out", default="runs/hotpot")
    ap.add_argument("--results", default=None, help="also write the tables to this markdown file")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from zerosearch.evaluation.behaviour import by_hops, hops_markdown, paired_markdown
    from zerosearch.data.qa import load_qa, subsample
    from zerosearch.demo import DemoConfig, cold_start, cold_start_folder
    from zerosearch.engines import EngineConfig, build_engine
    from zerosearch.evaluation.eval import EvalConfig, run_eval
    from zerosearch.agent.generation import HFBackend
    from zerosearch.io import atomic_write_jsonl, atomic_write_text, read_jsonl
    from zerosearch.models import load
    from zerosearch.agent.prefix_cache import budget_tokens
    from zerosearch.training.sft import SFTConfig, sft
    from zerosearch.training.warmup import ColdStartMix, demonstrations, report_lines
    from zerosearch.data.world import cached_world

    t0 = time.perf_counter()
    out = Path(args.out)
    records = load_qa(args.data)
    test = subsample(records, args.eval_size, args.seed)
    held = {r.id for r in test}
    pool = [r for r in records if r.id not in held]
    engine = build_engine(EngineConfig.from_dict({"name": "bm25", "corpus": args.corpus, "k": 3}))

    # The world cold start, exactly bench/multihop.py's multi-hop policy (cached there).
    world = cached_world()
    wcfg = dataclasses.replace(DemoConfig(seed=args.seed), warmup_examples=400, warmup_steps=48, warmup_batch=8,
                               warmup_lr=1e-4)
    with build_engine(EngineConfig.from_dict({"name": "bm25", "corpus": str(world / "corpus.jsonl"), "k": 3})) as wbm25:
        world_policy = cold_start(wcfg, world, wbm25, progress=False)

    # HotpotQA demonstrations from the non-held-out questions only; a question without a plan can only be a
    # verbatim search. Then the fine-tune, resumable.
    tuned = out / "hotpot-sft"
    if not (tuned / "final" / "config.json").is_file():
        demos, report = demonstrations(pool, engine, examples=len(pool), k=3, seed=args.seed,
                                       mix=ColdStartMix(two_hop=0.8, recovery=0.0, verbatim=0.2))
        assert not {d["id"] for d in demos} & held, "a held-out question became a demonstration"
        print(f"HotpotQA demonstrations: {len(demos)}", *report_lines(report), sep="\n")
        replay = read_jsonl(cold_start_folder(wcfg, world) / "demos.jsonl")
        random.Random(args.seed).shuffle(replay)
        mixed = demos + replay[:round(args.replay * len(demos))]
        random.Random(args.seed + 1).shuffle(mixed)
        atomic_write_jsonl(tuned / "demos.jsonl", mixed)
        atomic_write_text(tuned / "demos-report.json", json.dumps(
            {"hotpot": report, "hotpot_demos": len(demos), "world_replay": len(mixed) - len(demos)}, indent=1) + "\n")
        # Micro-batches of 2, accumulated to --batch: a HotpotQA demonstration is ~900 tokens, and eager
        # attention keeps every layer's [heads, T, T] probabilities for backward (8 x 1536 tokens: ~20 GB).
        micro = min(2, args.batch)
        summary = sft(world_policy, mixed, tuned, SFTConfig(lr=args.lr, steps=args.steps, batch_size=micro,
                                                            grad_accum=max(1, args.batch // micro), warmup_steps=1,
                                                            max_len=1536, save_steps=8, seed=args.seed,
                                                            dtype="bf16-mixed"), resume=True, progress=False)
        print(f"HotpotQA fine-tune: SFT loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f}")
    policies = {"untrained": DemoConfig().model, "world": world_policy, "hotpot": str(tuned / "final")}
    report = json.loads((tuned / "demos-report.json").read_text())

    ecfg = EvalConfig(methods=["search-agent"], k=3, max_turns=MAX_TURNS, max_new_tokens=MAX_TOKENS,
                      answer_tokens=24, seed=args.seed, chunk=16)
    jobs = [tuple(j.split("/")) for j in args.only.split(",") if j]
    if bad := [j for j in jobs if len(j) != 2 or j[0] not in policies or j[1] not in ("rag", "search-agent")]:
        raise SystemExit(f"--only: unknown job(s) {bad}; each is POLICY/METHOD, POLICY in {sorted(policies)}")
    # This file carries no HotpotQA `type`; the plan's shape says it: a bridge entity to read, two entities
    # to compare, or no plan (supporting paragraphs the plan cannot chain).
    qtype = {r.id: question_type(r) for r in test}
    rows: list[dict[str, Any]] = []
    for name, method in jobs:
        print(f"== eval {name} {method}", flush=True)
        model, tok = load(policies[name])
        backend = HFBackend(model.eval(), tok, batch_size=8,
                            kv_cache_tokens=budget_tokens(ecfg.chunk, ecfg.max_total_tokens))
        folder = out / "eval" / f"{name}-{method}"
        run_eval(test, backend, tok, engine, dataclasses.replace(ecfg, methods=[method]), folder,
                 meta={"model": policies[name]})
        # by question type: every HotpotQA question is two-hop, its type says which kind
        rows += [{**r, "method": f"{name} / {method}", "hops": qtype.get(r["id"], "?")}
                 for r in read_jsonl(folder / "predictions.jsonl")]
    engine.close()
    labels = [f"{n} / {m}" for n, m in jobs]
    table = by_hops(rows, labels)
    overall = by_hops([{**r, "hops": "all"} for r in rows], labels)
    md = (hops_markdown(overall).replace("| hops |", "| questions |") + "\n\nBy HotpotQA type:\n\n" +
          hops_markdown(table).replace("| hops |", "| type |") + "\n\n" +
          paired_markdown([{**r, "hops": "all"} for r in rows], labels, ref="untrained / rag") + "\n\n" +
          # the fair test of searching: the same fine-tuned model, as an agent and as RAG, per question type
          paired_markdown(rows, [lb for lb in labels if lb.startswith("hotpot /")], ref="hotpot / rag"))
    print(md)
    if args.results:
        Path(args.results).write_text(md + "\n", encoding="utf-8")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    figures: dict[str, Any] = {"bench": "hotpot", "date": date.today().isoformat(), "commit": commit,
                               "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
                               "eval_questions": len(test), "hotpot_demos": report["hotpot_demos"],
                               "world_replay": report["world_replay"],
                               "minutes": round((time.perf_counter() - t0) / 60, 1)}
    for label, groups in {**overall, **{f"{k} [type]": v for k, v in table.items()}}.items():
        for group, s in groups.items():
            for key in ("em", "f1", "searches", "copy_rate"):
                figures[f"{key}/{label}/{group}"] = None if s[key] is None else round(s[key], 4)
    print(json.dumps(figures))


def question_type(rec: Any) -> str:
    from zerosearch.data.query_plans import hotpot_plan

    p = hotpot_plan(rec)
    return "no plan" if p is None else "bridge" if p[0].bridge else "comparison"


if __name__ == "__main__":
    main()
