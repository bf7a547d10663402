"""zerosearch compare runA/results.json runB/ ... : one table from several evaluations, with differences."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", metavar="RESULT", help="results.json files or eval folders (the first is the baseline)")
    p.add_argument("--metric", default="em", choices=("em", "cover_em", "f1"), help="default: %(default)s")
    p.add_argument("--out", help="also write the table to this Markdown file")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from zerosearch.eval import compare_table
    from zerosearch.io import atomic_write_text

    loaded = []
    for spec in args.results:
        path = Path(spec) / "results.json" if Path(spec).is_dir() else Path(spec)
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a results.json ({e.msg} at line {e.lineno})") from None
        if not isinstance(result, dict) or "summary" not in result:
            raise ValueError(f"{path}: no 'summary' field; is it a zerosearch eval results.json?")
        name = path.parent.name if path.name == "results.json" else path.stem
        loaded.append((name, result))
    names = [n for n, _ in loaded]
    if len(set(names)) != len(names):  # two folders with the same name: fall back to the given paths
        loaded = [(spec, r) for spec, (_, r) in zip(args.results, loaded)]
    table = compare_table(loaded, args.metric)
    print(table)
    if args.out:
        atomic_write_text(args.out, table + "\n")
    return 0
