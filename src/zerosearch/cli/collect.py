"""zerosearch collect --model M --engine bm25 --corpus world --data world:train --out traj.jsonl

Runs the policy as a search agent against a real engine (several samples per question) and stores every
trajectory with the documents of each search and its label (see zerosearch.simulator.collect). Rerun the
same command after an interruption to continue; with --cache FILE a rerun makes no new engine calls.
"""

from __future__ import annotations

import argparse

from zerosearch.engines.config import add_engine_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="the searching policy (a prompted or trained model)")
    p.add_argument("--data", default="world:train", help="QA file(s) or world[:split] (default: %(default)s)")
    p.add_argument("--out", required=True, help="trajectories JSONL (appended; resumed)")
    p.add_argument("--samples", type=int, default=4, help="trajectories per question")
    p.add_argument("--limit", type=int, help="a seeded sample of N questions per dataset")
    p.add_argument("--label", choices=("em", "f1"), default="em", help="positive when EM = 1 or F1 >= --threshold")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--max-turns", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=128, help="tokens per turn")
    p.add_argument("--policy-temperature", type=float, default=1.0, help="sampling temperature (samples must differ)")
    p.add_argument("--batch-size", type=int, default=8, help="policy generation batch")
    p.add_argument("--chunk", type=int, default=16,
                   help="questions per chunk: the unit of appending and of resume (keep it across reruns)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--world-dir", help="where the synthetic world lives (default: the cache dir)")
    add_engine_arguments(p, default="bm25")


def run(args: argparse.Namespace) -> int:
    from zerosearch.cli import CLIError
    from zerosearch.data.qa import resolve_qa
    from zerosearch.engines import EngineConfig, build_engine
    from zerosearch.agent.generation import HFBackend
    from zerosearch.models import load
    from zerosearch.agent.rollout import RolloutConfig
    from zerosearch.simulator.collect import collect

    ecfg = EngineConfig.from_args(args)
    if ecfg.name == "simulated":
        raise CLIError("collection needs a real engine (bm25, dense, http, serpapi), not 'simulated'")
    records, world = resolve_qa(args.data, limit=args.limit, seed=args.seed, world_dir=args.world_dir,
                                default_split="train")
    cfg = RolloutConfig(max_turns=args.max_turns, max_new_tokens_per_turn=args.max_tokens, k=ecfg.k,
                        temperature=args.policy_temperature, n=args.samples, prompt_overflow="truncate_left")
    model, tok = load(args.model)
    with build_engine(ecfg.on_world(world, world_dir=args.world_dir)) as engine:
        counts = collect(records, HFBackend(model.eval(), tok, batch_size=args.batch_size), tok, engine, cfg, args.out,
                         label_by=args.label, threshold=args.threshold, chunk=args.chunk, seed=args.seed,
                         progress=lambda done, total: print(f"  {done}/{total} questions", flush=True))
    print(f"{counts['trajectories']} trajectories for {counts['questions']} questions ({counts['new_questions']} new): "
          f"{counts['positive']} positive, {counts['negative']} negative, {counts['searches']} searches -> {args.out}")
    return 0
