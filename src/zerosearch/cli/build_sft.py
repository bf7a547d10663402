"""zerosearch build-sft traj.jsonl --out sim_sft.jsonl [--balance]: the simulator's SFT set from trajectories."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("trajectories", nargs="+", help="zerosearch collect output(s)")
    p.add_argument("--out", required=True, help="SFT examples JSONL (zerosearch sft-simulator --data)")
    p.add_argument("--label-by", choices=("outcome", "docs"), default="outcome",
                   help="useful = the trajectory answered right (outcome, the paper) or the docs hold a gold answer (docs)")
    p.add_argument("--balance", action="store_true", help="down-sample the larger label to the smaller")
    p.add_argument("--max-per-label", type=int, help="at most N useful and N noisy examples")
    p.add_argument("--doc-words", type=int, default=30,
                   help="words per document stated in the prompt (serve with the same --doc-words)")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from zerosearch.io import atomic_write_jsonl
    from zerosearch.simulator.build_sft import build_sft, read_trajectories

    trajs = [t for path in args.trajectories for t in read_trajectories(path)]
    examples, counts = build_sft(trajs, balance=args.balance, max_per_label=args.max_per_label,
                                 words=args.doc_words, seed=args.seed, label_by=args.label_by)
    atomic_write_jsonl(args.out, examples)
    print(", ".join(f"{k} {v}" for k, v in counts.items()) + f" -> {args.out}")
    if not examples:
        print("warning: no examples written (every search was empty, duplicated or conflicting)")
    return 0
