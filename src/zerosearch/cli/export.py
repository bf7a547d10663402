"""`zerosearch export`: a zerosearch QA source as another RL engine's training data.

    zerosearch export --format verl --data world:train --out data/verl/train.parquet
    zerosearch export --format verl --data nq_train.jsonl,hotpotqa_train.parquet --split train --out train.parquet

`--data` takes what every command takes: QA files (JSONL/JSON/parquet, comma-separated) and/or
`world[:split]`, the built-in synthetic world. The parquet's layout is described in
`zerosearch.integrations.verl.data`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", required=True, choices=("verl",), help="the target engine's data layout")
    parser.add_argument("--data", required=True, help="QA file(s), comma-separated, and/or world[:split]")
    parser.add_argument("--out", required=True, help="output file (.parquet)")
    parser.add_argument("--split", default="train",
                        help="the world's split for a bare `world`, and extra_info.split (default: %(default)s)")
    parser.add_argument("--agent-name", default="zerosearch_agent",
                        help="veRL agent loop per row (default: %(default)s; tool_agent for the drop-in tool)")
    parser.add_argument("--limit", type=int, help="a seeded sample of N questions per data source")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed for --limit (default: %(default)s)")
    parser.add_argument("--world-dir", help="where the built-in world lives (default: the cache dir)")


def run(args: argparse.Namespace) -> int:
    from zerosearch.integrations.common import load_records
    from zerosearch.integrations.verl.data import verl_rows, write_verl_parquet

    if not args.out.endswith(".parquet"):
        raise ValueError(f"--out {args.out!r}: veRL reads .parquet files; name the output *.parquet")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    records, _ = load_records(args.data, world_dir=args.world_dir, split=args.split, limit=args.limit, seed=args.seed)
    n = write_verl_parquet(args.out, verl_rows(records, split=args.split, agent_name=args.agent_name))
    sources = sorted({r.data_source for r in records})
    print(f"wrote {n} rows ({', '.join(sources)}) to {args.out} [format verl, agent {args.agent_name}]")
    return 0
