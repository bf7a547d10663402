"""The `zerosearch` command line.

Each subcommand lives in its own module under `zerosearch/cli/` and exposes
`add_arguments(parser)` and `run(args) -> int`. Those modules import only argparse-level things at the
top, and import torch/transformers inside `run`, so `zerosearch --help` stays instant.
To add a command: write `cli/<name>.py` and add one line to COMMANDS.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Order is the order shown by --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("zerosearch.cli.demo", "the whole method end to end: evaluate, cold start, GRPO on the simulator, evaluate, report"),
    "version": ("zerosearch.cli.version", "print the zerosearch version"),
    "world": ("zerosearch.cli.world", "generate the synthetic search world (corpus + QA splits)"),
    "warmup": ("zerosearch.cli.warmup", "cold-start SFT of the policy on search-protocol demonstrations"),
    "train": ("zerosearch.cli.train", "train a search policy with RL (GRPO, PPO, REINFORCE++) from a YAML config"),
    "train-trl": ("zerosearch.cli.train_trl", "train with trl.GRPOTrainer (accelerate, vLLM) from the same YAML config"),
    "collect": ("zerosearch.cli.collect", "simulation tuning 1: search trajectories against a real engine, labelled"),
    "build-sft": ("zerosearch.cli.build_sft", "simulation tuning 2: the simulator's SFT set from trajectories"),
    "sft-simulator": ("zerosearch.cli.sft_simulator", "simulation tuning 3: fine-tune the simulation LLM"),
    "judge-simulator": ("zerosearch.cli.judge_simulator", "simulation tuning 4: score a simulator, useful vs noisy"),
    "eval": ("zerosearch.cli.eval", "evaluate a model (direct, cot, r1, rag, search-agent) on QA sets: EM tables"),
    "ask": ("zerosearch.cli.ask", "run the search agent on one question and show its trajectory"),
    "view": ("zerosearch.cli.view", "the trajectories of a run or evaluation as one self-contained HTML page"),
    "compare": ("zerosearch.cli.compare", "one table from several evaluation results, with differences"),
    "gap": ("zerosearch.cli.gap", "the sim-to-real gap: one policy with several engines (bm25, simulator, self), paired"),
    "search": ("zerosearch.cli.search", "ask a search engine (bm25, dense, http, serpapi, simulated) some queries"),
    "serve": ("zerosearch.cli.serve", "expose a search engine over HTTP (/search, /retrieve, /health, /metrics)"),
    "export": ("zerosearch.cli.export", "a QA source as another RL engine's training data (--format verl)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zerosearch",
        description="Teach LLMs to search with RL, without calling a real search engine during training.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        importlib.import_module(module).add_arguments(p)
    return parser


class CLIError(Exception):
    """An error to show to the user as one clear line, without a traceback."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except (CLIError, FileNotFoundError, ValueError) as e:
        # Bad input (a missing file, a bad row, a bad flag value) is the user's to fix: one clear line.
        print(f"zerosearch {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"zerosearch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
