"""The paper's central claim in miniature: a policy trained against a *simulated* engine searches as well as
one trained against a *real* engine, when both are tested with the real engine.

Arms, all from the same cold-started SmolLM2 policy and the same seed (zerosearch.demo's GRPO settings):

    sim-curriculum   simulated engine, noise p rising 0 -> 0.5 (ZeroSearch)
    sim-fixed        simulated engine, fixed p = 0.5 (the paper's "random" ablation)
    real-bm25        real BM25 over the world's corpus (Search-R1)
    no-loss-mask     sim-curriculum, but retrieved tokens are trained on too (the mask ablation)
    self             the policy writes its own documents (SSRL-style `self` engine), same curriculum: the
                     only change from sim-curriculum is who writes (docs/self-search.md)

plus the starting policy itself ("cold start", no RL). Every arm is evaluated as a search agent with real
BM25 on the same held-out test questions (greedy). Runs are resumable: each arm lives in OUT/<arm>/ and a
rerun continues unfinished arms and skips finished ones.

    python bench/replication.py [--seed 0] [--steps 12] [--eval-size 64] [--arms a,b,...]

The seed sets the cold start's demonstrations, GRPO's sampling and the held-out questions, so each seed is
a separate replicate: its runs go to runs/replication-seed<N>/ and its results to
docs/results/replication-seed<N>.md, .png and .json. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import platform
import shutil
import time
from datetime import date
from pathlib import Path
from typing import Any

from zerosearch.demo import SIZE_FIELDS, DemoConfig, cold_start, grpo_config

ARMS = ("sim-curriculum", "sim-fixed", "real-bm25", "no-loss-mask", "self")


def arm_config(arm: str, base: dict[str, Any], world: Path) -> dict[str, Any]:
    cfg = copy.deepcopy(base)
    if arm == "sim-fixed":
        cfg["curriculum"]["fixed"] = 0.5
    elif arm == "real-bm25":
        cfg["engine"] = {"name": "bm25", "corpus": str(world / "corpus.jsonl"), "k": base["engine"]["k"]}
    elif arm == "no-loss-mask":
        cfg["train"]["loss_mask"] = False
    elif arm == "self":
        # The simulator's document settings (prompt family included), written by the policy instead.
        keep = ("k", "sim_mode", "doc_words", "max_new_tokens", "temperature", "seed")
        cfg["engine"] = {"name": "self", **{f: base["engine"][f] for f in keep if f in base["engine"]}}
    elif arm != "sim-curriculum":
        raise ValueError(f"unknown arm {arm!r}; choose from {', '.join(ARMS)}")
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--model", default="smollm2-135m-instruct", help="policy and simulator (tiny-random: a smoke run)")
    # The demo's sizes, with twice its GRPO steps and more test questions: a comparison needs them.
    sizes = DemoConfig(steps=12, eval_size=64)
    for name in SIZE_FIELDS:
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(sizes, name), help="default: %(default)s")
    ap.add_argument("--out", default=None, help="default runs/replication-seed<N>")
    ap.add_argument("--results", default="docs/results", help="where the table and plot go")
    args = ap.parse_args()

    from zerosearch.checkpoint import list_checkpoints
    from zerosearch.config import TrainConfig, dump_config
    from zerosearch.data import load_qa, subsample
    from zerosearch.engines import EngineConfig, build_engine
    from zerosearch.eval import EvalConfig, run_eval
    from zerosearch.generation import HFBackend
    from zerosearch.models import load
    from zerosearch.trainer import train
    from zerosearch.world import cached_world

    arms = [a for a in args.arms.split(",") if a]
    dcfg = DemoConfig(model=args.model, methods=["search-agent"], **{name: getattr(args, name) for name in SIZE_FIELDS})
    out, t0 = Path(args.out or f"runs/replication-seed{args.seed}"), time.perf_counter()
    world = cached_world()
    bm25 = build_engine(EngineConfig.from_dict({"name": "bm25", "corpus": str(world / "corpus.jsonl"), "k": dcfg.k}))
    start = cold_start(dcfg, world, bm25)
    base = grpo_config(dcfg, start, world)
    base["train"]["samples_per_step"] = 0
    base["train"]["save_every"] = 3  # an hour-long bench must survive being killed: resume from the last checkpoint

    policies = {"cold start": start}
    for arm in arms:
        cfg = TrainConfig.model_validate(arm_config(arm, base, world))
        run = out / arm
        if (run / "final" / "config.json").is_file():
            if (run / "config.yaml").read_text(encoding="utf-8") != dump_config(cfg):
                raise SystemExit(f"{run} holds an arm trained under other settings (see its config.yaml); pass "
                                 "another --out, or the settings it was run with")
        else:
            resume = bool(list_checkpoints(run))
            if run.exists() and not resume:  # killed before its first checkpoint: nothing to continue from
                shutil.rmtree(run)
            print(f"== train {arm} ({cfg.train.steps} steps{', resumed' if resume else ''})", flush=True)
            train(cfg, run, resume=resume, progress=False)
        policies[arm] = str(run / "final")

    test = subsample(load_qa(world / "test.jsonl"), args.eval_size, args.seed)
    ecfg = EvalConfig(methods=["search-agent"], k=dcfg.k, max_turns=2, max_new_tokens=dcfg.max_tokens, seed=args.seed,
                      chunk=16)
    results: dict[str, dict[str, Any]] = {}
    per_question: dict[str, dict[str, float]] = {}
    for name, path in policies.items():
        print(f"== eval {name}", flush=True)
        model, tok = load(path)
        folder = out / "eval" / name.replace(" ", "-")
        r = run_eval(test, HFBackend(model.eval(), tok, batch_size=8), tok, bm25, ecfg, folder, meta={"model": path})
        results[name] = r["summary"]["search-agent"]["avg"]
        per_question[name] = {p["id"]: p["em"] for p in _read(folder / "predictions.jsonl")}
    bm25.close()

    metrics = {arm: _read(out / arm / "metrics.jsonl") for arm in arms}
    curves = {arm: [m["reward"] for m in ms if "reward" in m] for arm, ms in metrics.items()}
    for name, v in results.items():
        # One seed and a few dozen questions: give the sampling error and the paired change against the
        # cold start (questions turned right / turned wrong) so nobody reads noise as an effect.
        v["se"] = math.sqrt(v["em"] * (1 - v["em"]) / len(test))
        start_em, now = per_question["cold start"], per_question[name]
        v["gained"] = sum(now[q] > start_em[q] for q in start_em)
        v["lost"] = sum(now[q] < start_em[q] for q in start_em)
    train_minutes = {arm: sum(m.get("time_step", 0.0) for m in ms) / 60 for arm, ms in metrics.items()}
    figures = {"bench": "replication", "seed": args.seed, "date": date.today().isoformat(), "machine": _machine(),
               "steps": args.steps, "questions_per_step": args.questions_per_step, "group_size": args.group_size,
               "eval_questions": len(test), "wall_hours_this_invocation": round((time.perf_counter() - t0) / 3600, 2),
               **{f"train_minutes/{k}": round(v, 1) for k, v in train_minutes.items()},
               **{f"em/{k}": round(v["em"], 4) for k, v in results.items()},
               **{f"f1/{k}": round(v["f1"], 4) for k, v in results.items()},
               **{f"searches/{k}": round(v["searches"], 3) for k, v in results.items()},
               **{f"gained_lost_vs_cold_start/{k}": [v["gained"], v["lost"]] for k, v in results.items()}}
    _write(Path(args.results), figures, results, curves, per_question, dcfg)
    print(json.dumps(figures))


def _read(path: Path) -> list[dict[str, Any]]:
    from zerosearch.io import read_jsonl

    return read_jsonl(path, tolerate_partial_tail=True)


def _machine() -> str:
    import os

    import torch

    return f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"


def _write(folder: Path, figures: dict[str, Any], results: dict[str, dict[str, Any]], curves: dict[str, list[float]],
           per_question: dict[str, dict[str, float]], dcfg: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zerosearch.io import atomic_path, atomic_write_text

    stem = f"replication-seed{figures['seed']}"
    lines = [f"# Replication in miniature ({figures['date']}, {figures['machine']})", "",
             f"`{dcfg.model}`, cold-started, then GRPO for {figures['steps']} steps x "
             f"{figures['questions_per_step']} questions x {figures['group_size']} samples on the synthetic world. "
             f"All policies tested as search agents with **real BM25** on the same {figures['eval_questions']} held-out "
             f"questions, greedy. Numbers as measured, seed {figures['seed']}.", "",
             "| policy | trained against | EM ± s.e. | F1 | searches / question | vs cold start: right / wrong | "
             "training min |", "|---|---|---|---|---|---|---|"]
    against = {"cold start": "(no RL)", "sim-curriculum": "simulator, curriculum p 0 -> 0.5",
               "sim-fixed": "simulator, fixed p = 0.5", "real-bm25": "real BM25",
               "no-loss-mask": "simulator, curriculum, no loss mask", "self": "itself (self-search), curriculum"}
    for name, v in results.items():
        minutes = figures.get(f"train_minutes/{name}")
        lines.append(f"| {name} | {against[name]} | {100 * v['em']:.1f} ± {100 * v['se']:.1f} | {100 * v['f1']:.1f} | "
                     f"{v['searches']:.2f} | +{v['gained']} / -{v['lost']} | "
                     f"{'' if minutes is None else f'{minutes:.0f}'} |")
    lines += ["", "s.e. = binomial standard error of EM over the test questions; right / wrong = test questions this "
              "policy gets right that the cold start got wrong, and the reverse.", "",
              f"Settings: `{json.dumps(dataclasses.asdict(dcfg))}`.", "",
              f"![replication]({stem}.png)", "",
              f"Reproduce: `python bench/replication.py --seed {figures['seed']}` (resumable)."]
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / f"{stem}.md", "\n".join(lines) + "\n")
    # The results as data, per-question EM included, for comparing and pooling seeds without parsing Markdown.
    atomic_write_text(folder / f"{stem}.json", json.dumps({"figures": figures, "results": results,
                                                          "per_question_em": per_question}, indent=1) + "\n")

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    for arm, ys in curves.items():
        a.plot(range(1, len(ys) + 1), ys, marker="o", label=arm)
    a.set_xlabel("step")
    a.set_ylabel("training reward (F1)")
    a.set_title("each arm against its own engine", fontsize=9)
    a.legend(fontsize=8)
    names = list(results)
    b.bar(names, [100 * results[n]["em"] for n in names], yerr=[100 * results[n]["se"] for n in names], capsize=4)
    b.set_ylabel("EM with real BM25 (%), ± s.e.")
    b.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.tight_layout()
    with atomic_path(folder / f"{stem}.png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
