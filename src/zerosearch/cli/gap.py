"""zerosearch gap --model M --data world --engines bm25,simulated-blind,self --limit 32 --out DIR

The sim-to-real gap of one policy: the search agent on the same questions with each engine, EM/F1 per
engine and paired differences against the first (a real engine). Engine flags (--corpus, --k, --sim-model,
--temperature, ...) apply to every engine; `--corpus` defaults to the world's corpus when --data is the
world. Each engine's evaluation lives in DIR/<engine>/ (resumable); the table in DIR/gap.{md,json}.
"""

from __future__ import annotations

import argparse

from zerosearch.engines.config import add_engine_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct", help="the policy: model name or checkpoint dir")
    p.add_argument("--data", default="world", help="QA file(s), comma-separated, or world[:split] (default: %(default)s)")
    p.add_argument("--engines", default="bm25,simulated-blind,self",
                   help="comma-separated: the reference (real) engine first, then others: bm25, dense, http, serpapi, "
                        "simulated-blind, self, or YAML files of engine fields (default: %(default)s)")
    p.add_argument("--limit", type=int, help="a seeded sample of N questions per dataset")
    p.add_argument("--seed", type=int, default=0, help="sub-sampling and sampling seed")
    p.add_argument("--out", required=True, help="folder: <engine>/ evaluations, gap.md, gap.json")
    p.add_argument("--max-turns", type=int, default=4, help="search-agent action turns")
    p.add_argument("--max-tokens", type=int, default=512, help="policy tokens per turn")
    p.add_argument("--batch-size", type=int, default=8, help="generation batch")
    p.add_argument("--policy-temperature", dest="policy_temperature", type=float, default=0.0, help="0: greedy (default)")
    p.add_argument("--world-dir", help="where the synthetic world lives (default: the cache dir)")
    p.add_argument("--no-progress", action="store_true")
    add_engine_arguments(p)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from zerosearch.cli.eval import _progress
    from zerosearch.data.qa import resolve_qa
    from zerosearch.engines import EngineConfig
    from zerosearch.evaluation.eval import EvalConfig
    from zerosearch.evaluation.gap import engine_configs, gap_table, run_gap
    from zerosearch.agent.generation import HFBackend
    from zerosearch.models import load

    if args.engine_name is not None:
        raise ValueError("zerosearch gap takes its engines from --engines, not --engine")
    cfg = EvalConfig(methods=["search-agent"], k=args.engine_k or 3, max_turns=args.max_turns,
                     max_new_tokens=args.max_tokens, temperature=args.policy_temperature, seed=args.seed)
    records, world = resolve_qa(args.data, limit=args.limit, seed=args.seed, world_dir=args.world_dir)
    base = EngineConfig.from_args(args)
    if base.corpus is None and world is not None:
        base = dataclasses.replace(base, corpus="world")
    engines = [(label, e.on_world(world, world_dir=args.world_dir))
               for label, e in engine_configs([s.strip() for s in args.engines.split(",") if s.strip()], base)]
    model, tok = load(args.model)
    backend = HFBackend(model.eval(), tok, batch_size=args.batch_size)
    meta = {"model": args.model, "data_spec": args.data, "limit": args.limit}
    with _progress(not args.no_progress) as progress:
        gap = run_gap(records, backend, tok, engines, cfg, args.out, meta=meta, progress=progress)
    print(gap_table(gap))
    print(f"\nper-engine results in {args.out}/<engine>/; this table in {args.out}/gap.md")
    return 0
