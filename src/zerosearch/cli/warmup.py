"""zerosearch warmup --model M --data world --engine bm25 --corpus world --out DIR"""

from __future__ import annotations

import argparse

from zerosearch.engines.config import add_engine_arguments
from zerosearch.training.warmup import ColdStartMix


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct", help="policy to warm up")
    p.add_argument("--data", default="world", help="QA file(s) for demonstrations, or 'world' (its train split)")
    p.add_argument("--world-dir", help="where the synthetic world lives (default: the cache dir)")
    p.add_argument("--examples", type=int, default=400, help="demonstrations to build (at most)")
    mix = ColdStartMix()
    p.add_argument("--two-hop-share", type=float, default=mix.two_hop,
                   help="share of two-hop chain demonstrations (query the bridge, read it, query again)")
    p.add_argument("--recovery-share", type=float, default=mix.recovery,
                   help="share of one-hop demonstrations whose first query misses and a better one follows")
    p.add_argument("--verbatim-share", type=float, default=mix.verbatim,
                   help="share of one-hop demonstrations that search the question itself; the rest of the "
                        "one-hop ones query the entity and relation")
    p.add_argument("--max-len", type=int, default=1024, help="tokens per demonstration (longer ones are cut)")
    p.add_argument("--steps", type=int, default=60, help="SFT optimizer steps")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lora-r", type=int, default=0, help="0: full fine-tuning")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder: demos.jsonl, loss.jsonl/png, final/ (the warmed-up policy)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted warm-up from its checkpoint")
    add_engine_arguments(p, default="bm25")


def run(args: argparse.Namespace) -> int:
    from zerosearch.data.qa import resolve_qa
    from zerosearch.engines import EngineConfig, build_engine
    from zerosearch.training.sft import SFTConfig
    from zerosearch.training.warmup import corpus_titles, warm_start

    records, world = resolve_qa(args.data, world_dir=args.world_dir, default_split="train")
    ecfg = EngineConfig.from_args(args).on_world(world, world_dir=args.world_dir)
    mix = ColdStartMix(two_hop=args.two_hop_share, recovery=args.recovery_share, verbatim=args.verbatim_share)
    # The plans name their supporting passages by id; the corpus gives their titles (the entities queried).
    titles = corpus_titles(ecfg.corpus) if ecfg.corpus else {}
    with build_engine(ecfg) as engine:
        summary = warm_start(args.model, records, engine, args.out,
                             SFTConfig(lr=args.lr, steps=args.steps, batch_size=args.batch_size, lora_r=args.lora_r,
                                       max_len=args.max_len, seed=args.seed),
                             examples=args.examples, mix=mix, titles=titles, k=ecfg.k, resume=args.resume)
    print(f"SFT loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f}; warmed-up policy: {summary['model']}")
    return 0
