"""zerosearch judge-simulator --sim M[@prompt|@sft] [--sim ...] --data DEV --reader M --corpus world --out DIR

Scores simulators (useful vs noisy documents) against a real engine on the same queries; see
zerosearch.simulator.judge. The engine flags choose the real engine (--no-real: none) and the simulators'
sampling settings (--temperature, --doc-words, --max-new-tokens, --engine-seed).
"""

from __future__ import annotations

import argparse

from zerosearch.engines.config import add_engine_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sim", action="append", required=True, metavar="MODEL[@MODE]",
                   help="a simulator model (name or folder) and its prompt family, prompt or sft (default: --sim-mode, "
                        "else sft); repeatable")
    p.add_argument("--sim-endpoint", help="OpenAI-compatible URL(s) serving the --sim models (e.g. vLLM); "
                                          "default: in-process")
    p.add_argument("--data", default="world:dev", help="QA file(s) or world[:split] (default: %(default)s)")
    p.add_argument("--queries", metavar="TRAJ_JSONL",
                   help="also the queries of these `zerosearch collect` trajectories, matched by question id")
    p.add_argument("--reader", default="smollm2-135m-instruct", help="the fixed reader model")
    p.add_argument("--batch-size", type=int, default=8, help="reader generation batch")
    p.add_argument("--limit", type=int, default=50, help="questions per dataset (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="which questions --limit keeps")
    p.add_argument("--no-real", action="store_true", help="no real-engine row")
    p.add_argument("--out", required=True, help="folder: judge.md, judge.json, examples.jsonl")
    p.add_argument("--world-dir", help="where the synthetic world lives (default: the cache dir)")
    add_engine_arguments(p, default="bm25")


def simulator_specs(specs: list[str], default_mode: str | None) -> dict[str, tuple[str, str]]:
    """{"model@mode": (model, mode)} for the --sim values, checked."""
    from zerosearch.cli import CLIError

    out: dict[str, tuple[str, str]] = {}
    for spec in specs:
        model, at, mode = spec.rpartition("@")
        if not at:
            model, mode = spec, default_mode or "sft"
        if not model or mode not in ("prompt", "sft"):
            raise CLIError(f"--sim {spec}: expected MODEL or MODEL@MODE with MODE 'prompt' or 'sft'")
        name = f"{model}@{mode}"
        if name in out:
            raise CLIError(f"--sim {name} is given twice")
        out[name] = (model, mode)
    return out


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    from contextlib import ExitStack
    from pathlib import Path

    from zerosearch.cli import CLIError
    from zerosearch.data.qa import resolve_qa
    from zerosearch.engines import EngineConfig, build_engine
    from zerosearch.agent.generation import HFBackend
    from zerosearch.io import atomic_write_jsonl, atomic_write_text
    from zerosearch.models import load
    from zerosearch.simulator.judge import judge, markdown, with_queries

    ecfg = EngineConfig.from_args(args)
    if args.engine_model:
        raise CLIError("name the simulators with --sim MODEL[@MODE] (--sim-model is not read here)")
    if ecfg.name == "simulated" and not args.no_real:
        raise CLIError("--engine names the real engine of the comparison (bm25, dense, http, serpapi); "
                       "the simulators are the --sim values")
    specs = simulator_specs(args.sim, args.engine_sim_mode)
    records, world = resolve_qa(args.data, limit=args.limit, seed=args.seed, world_dir=args.world_dir,
                                default_split="dev")
    records, queries = with_queries(records, args.queries)
    k = ecfg.k if args.engine_k else 3
    # The simulators take the sampling flags; they are told the answer, as in training.
    sim_cfgs = {name: dataclasses.replace(ecfg, name="simulated", model=model, sim_mode=mode, k=k, cache=None,
                                          endpoint=args.sim_endpoint or [], corpus=None, answer_blind=False)
                for name, (model, mode) in specs.items()}
    real_cfg = None if args.no_real else dataclasses.replace(ecfg, k=k).on_world(world, world_dir=args.world_dir)
    with ExitStack() as engines:  # every engine built is closed, whatever fails after it
        sims = {name: engines.enter_context(build_engine(cfg)) for name, cfg in sim_cfgs.items()}
        real = None if real_cfg is None else engines.enter_context(build_engine(real_cfg))
        reader, tok = load(args.reader)
        result = judge(records, sims, real, HFBackend(reader.eval(), tok, batch_size=args.batch_size), tok, k=k,
                       queries=queries)
    out = Path(args.out)
    table = markdown(result)
    atomic_write_text(out / "judge.md", table + "\n")
    atomic_write_jsonl(out / "examples.jsonl", result.pop("examples"))
    config = {"sims": {name: cfg.to_dict() for name, cfg in sim_cfgs.items()}, "reader": args.reader,
              "data": args.data, "queries_file": args.queries, "limit": args.limit, "seed": args.seed,
              "real_engine": real_cfg.to_dict() if real_cfg else None}
    atomic_write_text(out / "judge.json", json.dumps({**result, "config": config}, indent=1) + "\n")
    print(table)
    return 0
