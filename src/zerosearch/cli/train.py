"""zerosearch train --config configs/tiny-grpo.yaml [section.key=value ...] [--out DIR] [--resume]"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="experiment YAML (see configs/); omitted: the defaults")
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="override config values, e.g. train.steps=20 algorithm.name=ppo")
    p.add_argument("--out", required=True, help="run folder: config, metrics.jsonl, samples, checkpoints, final/")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def run(args: argparse.Namespace) -> int:
    import sys

    from zerosearch.training.config import load_train_config
    from zerosearch.training.monitors import TrainingHalted
    from zerosearch.training.trainer import train

    cfg = load_train_config(args.config, args.overrides)
    try:
        last = train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    except TrainingHalted as e:  # a deliberate stop (failed searches, collapse): one line, no traceback
        print(f"zerosearch train: {e}  (see {args.out}/metrics.jsonl; continue with --resume)", file=sys.stderr)
        return 3
    shown = {k: round(v, 4) for k, v in last.items() if isinstance(v, float) and k.split("/")[0] in
             ("reward", "f1", "em", "dev", "searches", "kl", "noise_prob")}
    print(f"run: {args.out}  (metrics.jsonl, metrics.png, samples.jsonl, checkpoints/, final/)")
    print("last step:", shown)
    return 0
