"""`zerosearch world`: write the synthetic search world (corpus + QA splits) and show a taste of it.

An existing world in --out made from the same config is reused, so `make demo` is instant the second time.
"""

from __future__ import annotations

import argparse
import textwrap

_SIZES = (("people", "n_people"), ("places", "n_places"), ("orgs", "n_orgs"), ("works", "n_works"),
          ("questions", "n_questions"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from zerosearch.data.world import WorldConfig  # stdlib-only module: cheap enough for --help

    defaults = WorldConfig()
    parser.add_argument("--out", required=True, help="directory for corpus.jsonl, {train,dev,test}.jsonl, world.json")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="same seed, same world (default: %(default)s)")
    for flag, name in _SIZES:
        parser.add_argument(f"--{flag}", type=int, default=getattr(defaults, name), metavar="N",
                            help=f"number of {flag} (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from zerosearch.io import read_jsonl
    from zerosearch.data.world import WorldConfig, ensure_world, world_is_current

    cfg = WorldConfig(seed=args.seed, **{name: getattr(args, flag) for flag, name in _SIZES})
    start = time.perf_counter()
    reused = world_is_current(args.out, cfg)
    out = ensure_world(args.out, cfg)
    how = "reused existing world" if reused else f"generated in {time.perf_counter() - start:.2f} s"

    counts = json.loads((out / "world.json").read_text(encoding="utf-8"))["counts"]
    print(f"world: {out} ({how}, seed {cfg.seed})")
    print(f"  passages:  {counts['passages']} ({cfg.n_people} people, {cfg.n_places} places, "
          f"{cfg.n_orgs} organisations, {cfg.n_works} works)")
    print(f"  questions: {counts['questions']} ({counts['one_hop']} one-hop, {counts['two_hop']} two-hop): "
          f"train {counts['train']}, dev {counts['dev']}, test {counts['test']}")

    samples = read_jsonl(out / "train.jsonl")[:3]
    print("sample questions:")
    for q in samples:
        print(f"  [{q['hops']}-hop {q['template']}] {q['question']} -> {' | '.join(q['golden_answers'])}")
    if samples:
        passages = {p["id"]: p for p in read_jsonl(out / "corpus.jsonl")}
        passage = passages[samples[0]["supporting_ids"][-1]]  # the one holding the first sample's answer
        title, _, text = passage["contents"].partition("\n")
        print(f"sample passage {passage['id']}:")
        print(f"  {title}")
        print(textwrap.fill(text, width=100, initial_indent="  ", subsequent_indent="  "))
    return 0
