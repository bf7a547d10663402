"""zerosearch warmup --model M --data world --engine bm25 --corpus world --out DIR"""

from __future__ import annotations

import argparse

from zerosearch.engines.config import add_engine_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct", help="policy to warm up")
    p.add_argument("--data", default="world", help="QA file(s) for demonstrations, or 'world' (its train split)")
    p.add_argument("--world-dir", help="where the synthetic world lives (default: the cache dir)")
    p.add_argument("--examples", type=int, default=400, help="demonstrations to build (at most)")
    p.add_argument("--steps", type=int, default=60, help="SFT optimizer steps")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lora-r", type=int, default=0, help="0: full fine-tuning")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder: demos.jsonl, loss.jsonl/png, final/ (the warmed-up policy)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted warm-up from its checkpoint")
    add_engine_arguments(p, default="bm25")


def run(args: argparse.Namespace) -> int:
    from zerosearch.data import resolve_qa
    from zerosearch.engines import EngineConfig, build_engine
    from zerosearch.sft import SFTConfig
    from zerosearch.warmup import warm_start

    records, world = resolve_qa(args.data, world_dir=args.world_dir, default_split="train")
    ecfg = EngineConfig.from_args(args).on_world(world, world_dir=args.world_dir)
    with build_engine(ecfg) as engine:
        summary = warm_start(args.model, records, engine, args.out,
                             SFTConfig(lr=args.lr, steps=args.steps, batch_size=args.batch_size, lora_r=args.lora_r,
                                       seed=args.seed), examples=args.examples, k=ecfg.k, resume=args.resume)
    print(f"SFT loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f}; warmed-up policy: {summary['model']}")
    return 0
