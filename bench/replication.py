"""The paper's central claim in miniature: a policy trained against a *simulated* engine searches as well as
one trained against a *real* engine, when both are tested with the real engine.

Arms (`ARMS`), all from the same cold-started SmolLM2 policy and the same seed (zerosearch.demo's GRPO
settings, with the speed options of bench/step.py on):

    sim-curriculum   simulated engine, noise p rising 0 -> 0.5 (ZeroSearch)
    sim-fixed        simulated engine, fixed p = 0.5 (the paper's "random" ablation)
    real-bm25        real BM25 over the world's corpus (Search-R1)
    no-loss-mask     sim-curriculum, but retrieved tokens are trained on too (the mask ablation)
    self             the policy writes its own documents (SSRL-style `self` engine), same curriculum: the
                     only change from sim-curriculum is who writes (docs/self-search.md)

plus the starting policy itself ("cold start", no RL). Every arm is evaluated as a search agent with real
BM25 on the same held-out test questions (greedy). Runs are resumable: each arm lives in OUT/<arm>/ and a
rerun continues unfinished arms and skips finished ones.

Power: EM is compared *per question* (zerosearch.evaluation.stats): each arm against the cold start and every pair of
arms, with McNemar's exact p-value and the paired change with its 95% CI (and a bootstrap CI over
questions); the minimum detectable effect at 80% power for the measured discordance says what size of
effect a null result rules out. The cold start is the demo's (10 SFT steps on 128 demonstrations): a
shorter one left RL no reward to learn from; its EM is in the table. Besides EM, per hop count (the
world's 1- and 2-hop questions): searches per question, answer rate (a tagged answer) and format (no
invalid action).

    python bench/replication.py [--seed 0] [--steps 12] [--eval-size 256] [--arms a,b,...] [--estimate]

The seed sets the cold start's demonstrations, GRPO's sampling and the held-out questions, so each seed is
a separate replicate: its runs go to runs/<name>-seed<N>/ and its results to
docs/results/<name>-seed<N>.md, .png and .json (--name, default replication-powered). Prints one JSON line.
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
from zerosearch.evaluation.behaviour import query_copy_rate
from zerosearch.evaluation.stats import bootstrap_ci, mcnemar_exact, mde_paired, paired_delta_ci

def _sim_fixed(cfg: dict[str, Any], world: Path) -> None:
    cfg["curriculum"]["fixed"] = 0.5


def _real_bm25(cfg: dict[str, Any], world: Path) -> None:
    cfg["engine"] = {"name": "bm25", "corpus": str(world / "corpus.jsonl"), "k": cfg["engine"]["k"]}


def _no_loss_mask(cfg: dict[str, Any], world: Path) -> None:
    cfg["train"]["loss_mask"] = False


def _self_search(cfg: dict[str, Any], world: Path) -> None:
    # The simulator's document settings (prompt family included), written by the policy instead.
    keep = ("k", "sim_mode", "doc_words", "max_new_tokens", "temperature", "seed")
    cfg["engine"] = {"name": "self", **{f: cfg["engine"][f] for f in keep if f in cfg["engine"]}}


# An arm: what it trains against (the table's wording) and how it changes the base GRPO config in place.
# A new arm is one entry here.
ARMS: dict[str, tuple[str, Any]] = {
    "sim-curriculum": ("simulator, curriculum p 0 -> 0.5", lambda cfg, world: None),
    "sim-fixed": ("simulator, fixed p = 0.5", _sim_fixed),
    "real-bm25": ("real BM25", _real_bm25),
    "no-loss-mask": ("simulator, curriculum, no loss mask", _no_loss_mask),
    "self": ("itself (self-search), curriculum", _self_search),
}


def arm_config(arm: str, base: dict[str, Any], world: Path) -> dict[str, Any]:
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose from {', '.join(ARMS)}")
    cfg = copy.deepcopy(base)
    ARMS[arm][1](cfg, world)
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--model", default="smollm2-135m-instruct", help="policy and simulator (tiny-random: a smoke run)")
    # The demo's cold start and GRPO steps on 256 test questions. A shorter cold start (5 SFT steps on 64
    # demonstrations) left nearly every GRPO group at reward 0: no advantage, nothing for RL to learn from.
    # The power of 256 paired questions depends on how many flip (docs/results/replication-powered-*.md).
    sizes = DemoConfig(eval_size=256)
    for name in SIZE_FIELDS:
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(sizes, name), help="default: %(default)s")
    ap.add_argument("--out", default=None, help="default runs/<name>-seed<N>")
    ap.add_argument("--results", default="docs/results", help="where the table and plot go")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 holds up best on a busy machine)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="training's forward passes and the simulator's weights (zerosearch.agent.precision); "
                         "evaluation stays fp32")
    ap.add_argument("--baseline-path", action="store_true",
                    help="train without the exact speed options (optim.sort_by_length, optim.reuse_sampler_logprobs, "
                         "optim.reuse_kv_cache, optim.share_prompts, optim.loss_token_logits)")
    ap.add_argument("--train-only", action="store_true",
                    help="train the arms and stop: several invocations (each with its own --arms, same --out) can "
                         "train in parallel, one per core; a last one with every arm evaluates and writes the tables")
    ap.add_argument("--name", default="replication-powered",
                    help="results stem: <name>-seed<N>.md/.json/.png in --results, runs in runs/<name>-seed<N>/")
    ap.add_argument("--estimate", type=float, nargs="?", const=1.0, default=None, metavar="SPEEDUP",
                    help="print the estimated wall time and exit (SPEEDUP: bench/step.py's step ratio, default 1)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    from zerosearch.training.checkpoint import list_checkpoints
    from zerosearch.training.config import TrainConfig, dump_config
    from zerosearch.data.qa import load_qa, subsample
    from zerosearch.engines import EngineConfig, build_engine
    from zerosearch.evaluation.eval import EvalConfig, run_eval
    from zerosearch.agent.generation import HFBackend
    from zerosearch.models import load
    from zerosearch.agent.prefix_cache import budget_tokens
    from zerosearch.training.trainer import train
    from zerosearch.data.world import cached_world

    arms = [a for a in args.arms.split(",") if a]
    for a in arms:
        if a not in ARMS:
            raise SystemExit(f"unknown arm {a!r}; choose from {', '.join(ARMS)}")
    if args.estimate is not None:
        print(json.dumps(estimate(args, len(arms), args.estimate)))
        return
    dcfg = DemoConfig(model=args.model, methods=["search-agent"], precision=args.precision,
                      **{name: getattr(args, name) for name in SIZE_FIELDS})
    out, t0 = Path(args.out or f"runs/{args.name}-seed{args.seed}"), time.perf_counter()
    world = cached_world()
    bm25 = build_engine(EngineConfig.from_dict({"name": "bm25", "corpus": str(world / "corpus.jsonl"), "k": dcfg.k}))
    start = cold_start(dcfg, world, bm25)
    base = grpo_config(dcfg, start, world)
    base["train"]["samples_per_step"] = 0
    base["train"]["save_every"] = 3  # an hour-long bench must survive being killed: resume from the last checkpoint
    speed = not args.baseline_path  # same maths either way (tests/test_packing.py); see bench/step.py
    base["optim"].update(sort_by_length=speed, reuse_sampler_logprobs=speed, reuse_kv_cache=speed, share_prompts=speed,
                         loss_token_logits=speed)

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
    if args.train_only:
        print(json.dumps({"bench": "replication", "trained": arms, "out": str(out)}))
        return
    # The arms first, the shared cold start last: parallel invocations then rarely reach it at the same time.
    policies = {**{a: policies[a] for a in arms}, "cold start": start}

    test = subsample(load_qa(world / "test.jsonl"), args.eval_size, args.seed)
    ecfg = EvalConfig(methods=["search-agent"], k=dcfg.k, max_turns=dcfg.max_turns, max_new_tokens=dcfg.max_tokens, seed=args.seed,
                      chunk=16)
    results: dict[str, dict[str, Any]] = {}
    per_question: dict[str, dict[str, float]] = {}
    rows: dict[str, list[dict[str, Any]]] = {}
    for name, path in policies.items():
        print(f"== eval {name}", flush=True)
        model, tok = load(path)
        folder = out / "eval" / name.replace(" ", "-")
        # The trainer's KV reuse, for the eval's turns too.
        kv = budget_tokens(ecfg.chunk, ecfg.max_total_tokens) if speed else 0
        backend = HFBackend(model.eval(), tok, batch_size=8, kv_cache_tokens=kv)
        r = _eval_waiting(lambda: run_eval(test, backend, tok, bm25, ecfg, folder, meta={"model": path}))
        results[name] = r["summary"]["search-agent"]["avg"]
        rows[name] = _read(folder / "predictions.jsonl")
        per_question[name] = {p["id"]: p["em"] for p in rows[name]}
    bm25.close()
    results = {"cold start": results.pop("cold start"), **results}  # the table's first row

    metrics = {arm: _read(out / arm / "metrics.jsonl") for arm in arms}
    curves = {arm: [m["reward"] for m in ms if "reward" in m] for arm, ms in metrics.items()}
    ids = [q.id for q in test]
    for name, v in results.items():
        v["se"] = math.sqrt(v["em"] * (1 - v["em"]) / len(test))
        v.update(paired(per_question["cold start"], per_question[name], ids, seed=args.seed))
    between = {f"{x} vs {y}": paired(per_question[x], per_question[y], ids, seed=args.seed)
               for i, x in enumerate(arms) for y in arms[i + 1:]}
    hops = {q.id: q.extra.get("hops") for q in test}
    by_hop = {name: per_hop(rs, hops) for name, rs in rows.items()}
    # Power: the discordant share measured between the arms and the cold start (0.2 when nothing was run).
    disc = [(v["gained"] + v["lost"]) / len(test) for k, v in results.items() if k != "cold start"]
    psi = sum(disc) / len(disc) if disc else 0.2
    mde = mde_paired(len(test), psi)
    train_minutes = {arm: sum(m.get("time_step", 0.0) for m in ms) / 60 for arm, ms in metrics.items()}
    figures = {"bench": "replication", "name": args.name, "seed": args.seed, "date": date.today().isoformat(), "machine": _machine(),
               "steps": args.steps, "questions_per_step": args.questions_per_step, "group_size": args.group_size,
               "warmup_examples": args.warmup_examples, "warmup_steps": args.warmup_steps,
               "eval_questions": len(test), "wall_hours_this_invocation": round((time.perf_counter() - t0) / 3600, 2),
               "discordant_share": round(psi, 4), "mde_em_points_80pct_power": round(100 * mde, 1),
               **{f"train_minutes/{k}": round(v, 1) for k, v in train_minutes.items()},
               **{f"em/{k}": round(v["em"], 4) for k, v in results.items()},
               **{f"f1/{k}": round(v["f1"], 4) for k, v in results.items()},
               **{f"searches/{k}": round(v["searches"], 3) for k, v in results.items()},
               **{f"gained_lost_vs_cold_start/{k}": [v["gained"], v["lost"]] for k, v in results.items()},
               **{f"p_mcnemar_vs_cold_start/{k}": round(v["p"], 4) for k, v in results.items() if k != "cold start"},
               **{f"p_mcnemar/{k}": round(v["p"], 4) for k, v in between.items()}}
    _write(Path(args.results), figures, results, curves, per_question, dcfg, between=between, by_hop=by_hop)
    print(json.dumps(figures))


def _eval_waiting(run: Any, poll_s: float = 30.0) -> Any:
    """run(), waiting while another invocation holds the same evaluation (run_eval's lock); it then resumes
    what that one wrote instead of evaluating it twice."""
    while True:
        try:
            return run()
        except ValueError as e:
            if "another evaluation is writing" not in str(e):
                raise
            print(f"   {e}; retrying in {poll_s:.0f} s", flush=True)
            time.sleep(poll_s)


def paired(before: dict[str, float], after: dict[str, float], ids: list[str], *, seed: int = 0) -> dict[str, Any]:
    """after against before on the same questions: gained / lost, McNemar's exact p, the EM change with
    its normal and bootstrap 95% CIs (fractions)."""
    g = sum(after[q] > before[q] for q in ids)
    lost = sum(after[q] < before[q] for q in ids)
    delta, lo, hi = paired_delta_ci(g, lost, len(ids))
    _, blo, bhi = bootstrap_ci([before[q] for q in ids], [after[q] for q in ids], seed=seed)
    return {"gained": g, "lost": lost, "p": mcnemar_exact(g, lost), "delta": delta, "ci": [lo, hi],
            "boot_ci": [blo, bhi]}


def per_hop(rows: list[dict[str, Any]], hops: dict[str, Any]) -> dict[str, dict[str, float]]:
    """What RL changes besides EM, per hop count: EM, searches per question, answer rate (a tagged answer),
    format (no invalid action) and the share of questions answered with no search at all."""
    out: dict[str, dict[str, float]] = {}
    for h in sorted({hops.get(r["id"]) for r in rows}, key=str):
        rs = [r for r in rows if hops.get(r["id"]) == h]
        n = len(rs)
        out[str(h)] = {"n": n, "em": sum(r["em"] for r in rs) / n, "searches": sum(r["searches"] for r in rs) / n,
                       "answer_rate": sum(bool(r["tagged"]) for r in rs) / n,
                       "format_ok": sum(r["invalid_actions"] == 0 for r in rs) / n,
                       "no_search": sum(r["searches"] == 0 for r in rs) / n,
                       "copy_rate": query_copy_rate(rs)}
    return out


# Unit costs measured on a quiet 2-core CPU with main's code path: docs/results/replication-seed1.json
# (4 arms x 12 steps x 8 trajectories in 42.4 training minutes: 53 s a step; its 0.95 h invocation leaves
# ~2.7 s per evaluated question), and the README's demo timing (cold start 268 s for 10 SFT steps of 8).
STEP_SECONDS_PER_8_TRAJECTORIES = 53.0
EVAL_SECONDS_PER_QUESTION = 2.7
SFT_SECONDS_PER_EXAMPLE_STEP = 3.4


def estimate(args: argparse.Namespace, n_arms: int, speedup: float = 1.0) -> dict[str, Any]:
    """Wall-time estimate on a quiet 2-core CPU; `speedup`: bench/step.py's measured step ratio."""
    trajs = args.questions_per_step * args.group_size
    train = n_arms * args.steps * STEP_SECONDS_PER_8_TRAJECTORIES * trajs / 8 / speedup
    evals = (n_arms + 1) * args.eval_size * EVAL_SECONDS_PER_QUESTION
    sft = args.warmup_steps * args.warmup_batch * SFT_SECONDS_PER_EXAMPLE_STEP
    return {"estimate_hours": round((train + evals + sft) / 3600, 2), "train_hours": round(train / 3600, 2),
            "eval_hours": round(evals / 3600, 2), "cold_start_hours": round(sft / 3600, 2), "speedup": speedup,
            "note": "quiet machine, from measured unit costs; a loaded one is slower in proportion to its load"}


def _read(path: Path) -> list[dict[str, Any]]:
    from zerosearch.io import read_jsonl

    return read_jsonl(path, tolerate_partial_tail=True)


def _machine() -> str:
    import os

    import torch

    return f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"


def _write(folder: Path, figures: dict[str, Any], results: dict[str, dict[str, Any]], curves: dict[str, list[float]],
           per_question: dict[str, dict[str, float]], dcfg: Any, *, between: dict[str, dict[str, Any]] | None = None,
           by_hop: dict[str, dict[str, dict[str, float]]] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zerosearch.io import atomic_path, atomic_write_text

    pct = lambda x: f"{100 * x:+.1f}"
    ci = lambda v: f"{pct(v['delta'])} [{pct(v['ci'][0])}, {pct(v['ci'][1])}]"
    stem = f"{figures.get('name', 'replication')}-seed{figures['seed']}"
    lines = [f"# Replication in miniature ({figures['date']}, {figures['machine']})", "",
             f"`{dcfg.model}`, cold-started ({figures['warmup_steps']} SFT steps on {figures['warmup_examples']} "
             f"demonstrations), then GRPO for {figures['steps']} steps x "
             f"{figures['questions_per_step']} questions x {figures['group_size']} samples on the synthetic world. "
             f"All policies tested as search agents with **real BM25** on the same {figures['eval_questions']} held-out "
             f"questions, greedy. Numbers as measured, seed {figures['seed']}.", "",
             "| policy | trained against | EM ± s.e. | F1 | searches / question | vs cold start: right / wrong | "
             "EM change, points [95% CI] | McNemar p | training min |", "|---|---|---|---|---|---|---|---|---|"]
    against = {"cold start": "(no RL)", **{arm: desc for arm, (desc, _) in ARMS.items()}}
    for name, v in results.items():
        minutes = figures.get(f"train_minutes/{name}")
        rl = name != "cold start"
        lines.append(f"| {name} | {against.get(name, name)} | {100 * v['em']:.1f} ± {100 * v['se']:.1f} | "
                     f"{100 * v['f1']:.1f} | {v['searches']:.2f} | +{v['gained']} / -{v['lost']} | "
                     f"{ci(v) if rl and 'ci' in v else ''} | {format(v['p'], '.3f') if rl and 'p' in v else ''} | "
                     f"{'' if minutes is None else f'{minutes:.0f}'} |")
    lines += ["", "s.e. = binomial standard error of EM over the test questions; right / wrong = test questions this "
              "policy gets right that the cold start got wrong, and the reverse; the EM change is (right - wrong) / n "
              "with a paired normal CI (bootstrap CIs over questions in the JSON); McNemar p = exact two-sided test "
              "on the discordant questions.", ""]
    if "mde_em_points_80pct_power" in figures:
        lines += [f"**Power.** With {figures['eval_questions']} paired questions and "
                  f"{100 * figures['discordant_share']:.0f}% of them discordant (measured, arms vs cold start), a "
                  f"two-sided test at 5% detects an EM change of **{figures['mde_em_points_80pct_power']:.1f} points** "
                  "with 80% probability: a p above 0.05 here rules out effects of about that size, not smaller ones.",
                  ""]
    if between:
        lines += ["Between arms (the second minus the first, same questions):", "",
                  "| comparison | right / wrong | EM change, points [95% CI] | McNemar p |", "|---|---|---|---|"]
        lines += [f"| {k} | +{v['gained']} / -{v['lost']} | {ci(v)} | {v['p']:.3f} |" for k, v in between.items()]
        lines.append("")
    if by_hop:
        lines += ["Besides EM, per hop count (query-copy rate = queries equal to the question; answer rate = a tagged answer; format = no invalid action; no search = "
                  "answered without searching):", "",
                  "| policy | hops | n | EM | searches / question | query-copy rate | answer rate | format ok | no search |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, hs in by_hop.items():
            for h, v in hs.items():
                copy = "-" if v.get("copy_rate") is None else f"{100 * v['copy_rate']:.0f}%"
                lines.append(f"| {name} | {h} | {v['n']} | {100 * v['em']:.1f} | {v['searches']:.2f} | {copy} | "
                             f"{100 * v['answer_rate']:.0f}% | {100 * v['format_ok']:.0f}% | {100 * v['no_search']:.0f}% |")
        lines.append("")
    lines += [f"Settings: `{json.dumps(dataclasses.asdict(dcfg))}`.", "",
              f"![replication]({stem}.png)", "",
              f"Reproduce: `python bench/replication.py --seed {figures['seed']}` (resumable)."]
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / f"{stem}.md", "\n".join(lines) + "\n")
    # The results as data, per-question EM included, for comparing and pooling seeds without parsing Markdown.
    atomic_write_text(folder / f"{stem}.json", json.dumps({"figures": figures, "results": results,
                                                          "between": between or {}, "by_hop": by_hop or {},
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
