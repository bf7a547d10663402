"""zerosearch train-trl --config configs/trl-tiny-grpo.yaml [section.key=value ...] --out DIR [--resume]

The same YAML as `zerosearch train` (model, data, engine, rollout, algorithm, curriculum, optim, train),
trained by trl.GRPOTrainer; TRL-only knobs go in its `trl:` section. Under `accelerate launch` every
process runs this command. Needs `pip install 'zerosearch[trl]'`.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="experiment YAML (see configs/trl-*.yaml); omitted: the defaults")
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="override config values, e.g. train.steps=4 trl.use_vllm=true")
    p.add_argument("--out", required=True, help="run folder: config, metrics.jsonl, TRL checkpoints, final/")
    p.add_argument("--resume", action="store_true", help="continue from the latest TRL checkpoint in --out")


def run(args: argparse.Namespace) -> int:
    from zerosearch.cli import CLIError
    from zerosearch.training.config import load_train_config

    cfg = load_train_config(args.config, args.overrides)
    try:
        from zerosearch.integrations.trl import train
        import trl  # noqa: F401
    except ImportError:
        raise CLIError("train-trl needs TRL: pip install 'zerosearch[trl]' (trl>=1.16, Python >= 3.11)") from None
    last = train(cfg, args.out, resume=args.resume)
    shown = {k: round(v, 4) for k, v in last.items() if isinstance(v, float) and
             k in ("loss", "reward", "zerosearch/f1", "zerosearch/em", "zerosearch/searches", "zerosearch/noise_prob")}
    print(f"run: {args.out}  (metrics.jsonl, rollouts.json, checkpoint-*/, final/)")
    print("last step:", shown)
    return 0
