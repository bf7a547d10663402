"""zerosearch judge-simulator --sim M[@prompt|@sft] [--sim ...] --data DEV --reader M --corpus world --out DIR

Scores simulators (useful vs noisy documents) against a real engine on the same queries; see
zerosearch.simulator.judge. The engine flags choose the real engine (--no-real: none) and the simulators'
sampling settings (--temperature, --doc-words, --max-new-tokens).
"""

from __future__ import annotations

import argparse

from zerosearch.engines.config import add_engine_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sim", action="append", required=True, metavar="MODEL[@MODE]",
                   help="a simulator model and its prompt family (prompt or sft; default sft); repeatable")
    p.add_argument("--data", default="world:dev", help="QA file(s) or world[:split] (default: %(default)s)")
    p.add_argument("--reader", default="smollm2-135m-instruct", help="the fixed reader model")
    p.add_argument("--limit", type=int, default=50, help="questions per dataset (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-real", action="store_true", help="no real-engine row")
    p.add_argument("--out", required=True, help="folder: judge.md, judge.json, examples.jsonl")
    p.add_argument("--world-dir", help="where the synthetic world lives (default: the cache dir)")
    add_engine_arguments(p, default="bm25")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    from pathlib import Path

    from zerosearch.data import resolve_qa
    from zerosearch.engines import EngineConfig, build_engine
    from zerosearch.generation import HFBackend
    from zerosearch.io import atomic_write_jsonl, atomic_write_text
    from zerosearch.models import load
    from zerosearch.simulator.judge import judge, markdown
    from zerosearch.trainer import engine_config
    from zerosearch.world import cached_world

    ecfg = EngineConfig.from_args(args)
    records, world = resolve_qa(args.data, limit=args.limit, seed=args.seed, world_dir=args.world_dir, default_split="dev")
    if ecfg.corpus == "world" and world is None:
        world = cached_world(world_dir=args.world_dir)
    k = ecfg.k if args.engine_k else 3
    sims = {}
    for spec in args.sim:
        model, _, mode = spec.rpartition("@") if "@" in spec else (spec, "", "sft")
        if mode not in ("prompt", "sft"):
            raise ValueError(f"--sim {spec}: the mode after @ must be 'prompt' or 'sft'")
        name = f"{Path(model).name if Path(model).exists() else model}@{mode}"
        sims[name] = build_engine(dataclasses.replace(ecfg, name="simulated", model=model, sim_mode=mode, k=k,
                                                      cache=None, corpus=None, answer_blind=False))
    real = None if args.no_real else build_engine(engine_config({**ecfg.to_dict(), "k": k}, world))
    reader, tok = load(args.reader)
    try:
        result = judge(records, sims, real, HFBackend(reader.eval(), tok, batch_size=8), tok, k=k)
    finally:
        for e in [*sims.values(), real]:
            if e is not None:
                e.close()
    out = Path(args.out)
    table = markdown(result)
    atomic_write_text(out / "judge.md", table + "\n")
    atomic_write_jsonl(out / "examples.jsonl", result.pop("examples"))
    atomic_write_text(out / "judge.json", json.dumps({**result, "sims": args.sim, "reader": args.reader,
                                                      "data": args.data, "engine": ecfg.to_dict()}, indent=1) + "\n")
    print(table)
    return 0
