"""zerosearch demo [--quick] [--out DIR]: the whole method end to end on this machine (see zerosearch.demo)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from zerosearch.demo import QUICK, SIZE_FIELDS, DemoConfig

    d = DemoConfig()
    p.add_argument("--out", default="demo-out", help="reports go to OUT/run-NNN/ (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="a smaller run (on 2 CPU cores, before the multi-hop cold start: 3.8 min the first time, 2.1 min with its cold start cached): " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    p.add_argument("--model", default=d.model, help="policy and simulator model (default: %(default)s)")
    for name in SIZE_FIELDS:
        p.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"default {getattr(d, name)} ({QUICK.get(name, getattr(d, name))} with --quick)")
    for name, what in (("two_hop_share", "two-hop chain demonstrations"),
                       ("recovery_share", "one-hop demonstrations whose first query misses"),
                       ("verbatim_share", "demonstrations that search the question itself")):
        p.add_argument(f"--{name.replace('_', '-')}", type=float,
                       help=f"cold start: share of {what} (default {getattr(d, name)}; zerosearch.training.warmup)")
    p.add_argument("--warmup-lr", type=float, help=f"cold start SFT learning rate (default {d.warmup_lr})")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), help="training's forward passes and the "
                   "simulator's weights (default auto: bf16 where the CPU or GPU has native bf16, else fp32; bf16 makes a "
                   "step ~1.5x faster there and changes the numbers; evaluation stays fp32)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import time

    from zerosearch.demo import QUICK, DemoConfig, run_demo

    given = {k: v for k, v in vars(args).items() if k in DemoConfig.__dataclass_fields__ and v is not None}
    cfg = DemoConfig(**{**(QUICK if args.quick else {}), **given})
    t0 = time.perf_counter()
    report = run_demo(cfg, args.out, progress=not args.no_progress)
    print(f"\nreport: {report}  ({(time.perf_counter() - t0) / 60:.1f} min)")
    print(report.read_text(encoding="utf-8").split("\n\nThe policy")[0])
    return 0
