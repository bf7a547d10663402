"""zerosearch compare runA/results.json runB/ ... : one table from several evaluations, with differences.

Results evaluated under different protocols (engine, corpus, k, turns, prompt template, split, questions,
sampling; see zerosearch.evaluation.protocol) are refused, naming the fields that differ, unless
`--allow-protocol-mismatch` (all fields) or `--allow-protocol-mismatch engine,k` (those fields) is given;
allowed differences are printed under the table. Leaderboard JSON files (`leaderboard-<method>.json`) are
accepted too.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", metavar="RESULT",
                   help="results.json / leaderboard-*.json files or eval folders (the first is the baseline)")
    p.add_argument("--metric", default="em", choices=("em", "cover_em", "f1"), help="default: %(default)s")
    p.add_argument("--allow-protocol-mismatch", nargs="?", const="*", default="", metavar="FIELDS",
                   help="compare results whose protocols differ: in any field, or only in these (comma-separated, "
                        "e.g. engine,corpus)")
    p.add_argument("--out", help="also write the table to this Markdown file")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from zerosearch.evaluation.eval import compare_table
    from zerosearch.io import atomic_write_text
    from zerosearch.evaluation.protocol import check_comparable, read_result

    loaded = []
    for spec in args.results:
        path = Path(spec) / "results.json" if Path(spec).is_dir() else Path(spec)
        if not path.is_file():
            raise ValueError(f"{path}: no such results file")
        result = read_result(path)
        name = path.parent.name if path.name == "results.json" else path.stem
        loaded.append((name, result))
    names = [n for n, _ in loaded]
    if len(set(names)) != len(names):  # two folders with the same name: fall back to the given paths
        loaded = [(spec, r) for spec, (_, r) in zip(args.results, loaded)]
    allow = {f.strip() for f in args.allow_protocol_mismatch.split(",") if f.strip()}
    noted = check_comparable([(n, r.get("protocol")) for n, r in loaded], allow)
    table = compare_table(loaded, args.metric)
    if noted:
        table += "\n\nProtocol differences (allowed by --allow-protocol-mismatch):\n" + "\n".join(f"- {x}" for x in noted)
    print(table)
    if args.out:
        atomic_write_text(args.out, table + "\n")
    return 0
