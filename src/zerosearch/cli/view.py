"""zerosearch view RUN [--out PATH.html] [--compare OTHER]: the trajectories as one self-contained HTML page.

RUN is a training run folder (samples.jsonl, metrics.jsonl), an evaluation folder (predictions.jsonl), a
demo run (run-NNN/), or one of those JSONL files. The page needs no network: open it from disk.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR_OR_FILE",
                   help="training run, evaluation output or demo run folder, or samples.jsonl / predictions.jsonl")
    p.add_argument("--out", metavar="PATH.html", help="where to write the page (default: viewer.html in RUN's folder)")
    p.add_argument("--compare", metavar="OTHER",
                   help="a second run on the same questions, shown side by side (differing questions first)")


def run(args: argparse.Namespace) -> int:
    from zerosearch.viewer import write_page

    out, runs = write_page(args.run, args.out, args.compare)
    shown = ", ".join(f"{r.label}: {len(r.trajectories)} trajectories" for r in runs)
    size = out.stat().st_size
    print(f"wrote {out} ({f'{size / 1e6:.1f} MB' if size >= 1e6 else f'{size / 1e3:.0f} kB'}; {shown})")
    for r in runs:
        for note in r.notes:
            print(f"note ({r.label}): {note}")
    return 0
