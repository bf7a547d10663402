"""`zerosearch demo`: the whole method, end to end, on one CPU with no network.

    1. world       the synthetic search world and its BM25 index (cached; reused by every rerun)
    2. before      the untrained model evaluated with real BM25: direct, rag, search-agent
    3. cold start  a short SFT on protocol demonstrations (a 135M model does not write <search> tags on
                   its own, so GRPO would see only zero rewards); cached per setting
    4. cold eval   the cold-started policy evaluated as a search agent, so RL's own effect is separable
    5. train       GRPO against the *simulated* engine (the model itself writing documents, told the
                   question and answer), with the curriculum of rising noise
    6. after       the trained policy evaluated with real BM25, which never sees an answer
    7. report      report.md + PNG plots in a fresh run folder (an earlier report is never overwritten):
                   before / cold start / after, and the paired change of each stage with its CI and
                   McNemar p (zerosearch.evaluation.stats) on the same questions

Every number in the report is measured in this run; the sizes are flags (`DemoConfig`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from zerosearch.io import atomic_write_text, cache_dir
from zerosearch.agent.precision import resolve as resolve_precision


@dataclass
class DemoConfig:
    model: str = "smollm2-135m-instruct"
    eval_size: int = 48  # test questions, evaluated before and after training
    methods: list[str] = field(default_factory=lambda: ["direct", "rag", "search-agent"])
    # 16 SFT steps x 8 of 400 demonstrations: ~7 min on 2 cores, so the demo fits 20 min from an empty cache;
    # bench/multihop.py measures longer cold starts.
    warmup_examples: int = 400
    warmup_steps: int = 16
    warmup_batch: int = 8
    warmup_lr: float = 1e-4
    # The cold start's demonstrations by kind (zerosearch.training.warmup.ColdStartMix): two-hop chains, one-hop
    # recoveries, verbatim-question searches; the one-hop rest queries entity + relation.
    two_hop_share: float = 0.5
    recovery_share: float = 0.1
    verbatim_share: float = 0.1
    steps: int = 12  # GRPO steps
    questions_per_step: int = 2
    group_size: int = 4  # GRPO n
    max_tokens: int = 64  # per policy turn (a two-hop demonstration's longest turn is 52 tokens)
    max_turns: int = 3  # searches before the forced answer: a two-hop chain, or a recovery, and room to spare
    k: int = 3
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0: auto (`auto_threads`)
    # Training's forward passes and the simulator's weights (zerosearch.agent.precision): "bf16" makes a step
    # ~1.5x faster than fp32 where bf16 is native, and changes the numbers; "auto" takes bf16 where it is native,
    # else fp32. Evaluation always runs in fp32, the same instrument for every stage.
    precision: str = "auto"


# The sizes `zerosearch demo` and bench/replication.py take as flags (--eval-size, --warmup-steps, ...).
SIZE_FIELDS = ("eval_size", "warmup_examples", "warmup_steps", "warmup_batch", "steps", "questions_per_step",
               "group_size", "max_tokens", "max_turns", "seed")

# --quick: the cold start dominates a short run, so it gets batch 4; 24 examples still teach the tags
# (measured: search-agent EM 0 -> 25 on the 8 test questions).
QUICK = dict(eval_size=8, warmup_examples=24, warmup_steps=6, warmup_batch=4, steps=2, questions_per_step=1)


def auto_threads(cores: int | None = None, load: float | None = None) -> int:
    """The cores not already busy, at least 1. Intra-op threads synchronise at every op, so one thread that
    loses its core stalls the others: measured on a 2-core box at load ~12, greedy decode ran 7x slower
    with 2 threads than with 1 (bench/step.py --probe). Busy = tasks runnable right now (`busy_now`),
    else the 1-minute load average, which lags: a job that ended a minute ago still counts in it."""
    import os

    cores = cores or os.cpu_count() or 1
    if load is None:
        now = busy_now()
        load = os.getloadavg()[0] if now is None else now
    return max(1, min(cores, cores - int(load + 0.5)))


def busy_now(path: str = "/proc/loadavg", reads: int = 5, interval: float = 0.05) -> float | None:
    """Tasks runnable now besides the reader: the median of a few reads of Linux's /proc/loadavg fourth
    field ("running/total"), minus this process's own reading thread; None where there is no such file."""
    import statistics
    import time

    counts = []
    try:
        for i in range(reads):
            with open(path, encoding="ascii") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
            if i + 1 < reads:
                time.sleep(interval)
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, statistics.median(counts))


def next_run_dir(out: str | Path) -> Path:
    """out/run-001, run-002, ...: the first that does not exist, so no report is ever overwritten."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = 1 + max((int(p.name[4:]) for p in out.glob("run-[0-9][0-9][0-9]") if p.name[4:].isdigit()), default=0)
    run = out / f"run-{n:03d}"
    run.mkdir()
    return run


class Stages:
    """Prints `[i/n] stage` headers with elapsed time and a rough ETA from the planned stage weights."""

    def __init__(self, weights: dict[str, float], clock: Callable[[], float] = time.perf_counter):
        self.weights, self.clock, self.done, self.planned = weights, clock, 0.0, sum(weights.values())
        self.t0 = clock()
        self.seconds: dict[str, float] = {}
        self._name, self._start, self._cached = None, 0.0, False

    def start(self, name: str, what: str, *, cached: bool = False) -> None:
        """`cached`: the stage's result is already there (a rerun's cold start), so its planned share of the
        work is left out of the ETA rather than counted as done."""
        self._finish()
        self._name, self._start, self._cached = name, self.clock(), cached
        if cached:
            self.planned -= self.weights[name]
        i = list(self.weights).index(name) + 1
        elapsed = self.clock() - self.t0
        # Extrapolate only once a real share of the work is done; the first stages are too short to tell.
        eta = ""
        if self.done and self.done >= 0.2 * self.planned:
            eta = f", about {elapsed / self.done * (self.planned - self.done) / 60:.0f} min to go"
        print(f"\n[{i}/{len(self.weights)}] {name}: {what}  ({elapsed / 60:.1f} min elapsed{eta})", flush=True)

    def _finish(self) -> None:
        if self._name is not None:
            self.seconds[self._name] = round(self.clock() - self._start, 1)
            if not self._cached:
                self.done += self.weights[self._name]

    def close(self) -> dict[str, float]:
        self._finish()
        self._name = None
        return self.seconds


# Rough shares of the wall time per stage, measured on a 2-core CPU with the defaults (for the ETA only).
_WEIGHTS = {"world": 0.02, "before": 0.18, "cold start": 0.22, "cold eval": 0.06, "train": 0.4, "after": 0.1,
            "report": 0.02}


def run_demo(cfg: DemoConfig, out: str | Path, *, progress: bool = True) -> Path:
    """Run every stage; return the path of report.md."""
    import torch

    from zerosearch.training.config import TrainConfig
    from zerosearch.data.qa import load_qa, subsample
    from zerosearch.engines import EngineConfig, build_engine
    from zerosearch.evaluation.eval import EvalConfig, run_eval
    from zerosearch.agent.generation import HFBackend
    from zerosearch.models import load
    from zerosearch.agent.prefix_cache import budget_tokens
    from zerosearch.training.trainer import train
    from zerosearch.data.world import cached_world

    run = next_run_dir(out)
    stages = Stages(_WEIGHTS)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads or auto_threads())

    stages.start("world", "the synthetic search world and its BM25 index")
    world = cached_world()
    test = subsample(load_qa(world / "test.jsonl"), cfg.eval_size, cfg.seed)
    bm25_cfg = {"name": "bm25", "corpus": str(world / "corpus.jsonl"), "k": cfg.k}
    bm25 = build_engine(EngineConfig.from_dict(bm25_cfg))
    print(f"world: {world} ({len(test)} test questions evaluated)")

    ecfg = EvalConfig(methods=list(cfg.methods), k=cfg.k, max_turns=cfg.max_turns, max_new_tokens=cfg.max_tokens,
                      answer_tokens=24, seed=cfg.seed, chunk=16)

    def evaluate(model_path: str, folder: str, methods: list[str] | None = None) -> dict[str, Any]:
        model, tok = load(model_path)
        bar = _eval_bar(progress)
        c = ecfg if methods is None else dataclasses.replace(ecfg, methods=methods)
        # The search agent's turns reuse their keys/values as in training (optim.reuse_kv_cache).
        backend = HFBackend(model.eval(), tok, batch_size=8, kv_cache_tokens=budget_tokens(c.chunk, c.max_total_tokens))
        result = run_eval(test, backend, tok, bm25, c, run / folder, meta={"model": model_path}, progress=bar)
        return result["summary"]

    stages.start("before", f"the untrained {cfg.model} with real BM25 ({', '.join(cfg.methods)})")
    before = evaluate(cfg.model, "eval-before")

    stages.start("cold start", f"SFT on {cfg.warmup_examples} protocol demonstrations, {cfg.warmup_steps} steps",
                 cached=is_cold_start_cached(cfg, world))
    warm = cold_start(cfg, world, bm25, progress=progress)

    stages.start("cold eval", "the cold-started policy as a search agent (RL's starting point)")
    evaluate(warm, "eval-cold-start", ["search-agent"])

    stages.start("train", f"GRPO, {cfg.steps} steps x {cfg.questions_per_step} questions x {cfg.group_size} "
                          "samples, against the simulated engine with the curriculum")
    tcfg = TrainConfig.model_validate(grpo_config(cfg, warm, world))
    train(tcfg, run / "train", progress=progress)

    stages.start("after", "the trained policy with real BM25")
    after = evaluate(str(run / "train" / "final"), "eval-after")
    bm25.close()

    stages.start("report", "tables and plots")
    seconds = stages.close()
    return write_report(run, cfg, before, after, seconds, world)


def cold_start_folder(cfg: DemoConfig, world: Path) -> Path:
    """The cold start's cache folder for this exact setting; the policy goes to its final/."""
    setting = {"model": cfg.model, "world": str(world), "examples": cfg.warmup_examples, "steps": cfg.warmup_steps,
               "batch": cfg.warmup_batch, "k": cfg.k, "seed": cfg.seed, "lr": cfg.warmup_lr,
               "mix": [cfg.two_hop_share, cfg.recovery_share, cfg.verbatim_share], "dtype": warmup_dtype(cfg),
               "demos": WARMUP_FORMAT}
    return cache_dir("demo-warmup", hashlib.sha256(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:12])


# Bump when the demonstrations' text changes, so a cached cold start of the old text is not reused.
WARMUP_FORMAT = 2


def warmup_dtype(cfg: DemoConfig) -> str:
    """The cold start's SFT precision: bf16 matmuls on fp32 weights where bf16 is native, as training's."""
    return "bf16-mixed" if resolve_precision(cfg.precision) == "bf16" else "float32"


def is_cold_start_cached(cfg: DemoConfig, world: Path) -> bool:
    return (cold_start_folder(cfg, world) / "final" / "config.json").is_file()


def cold_start(cfg: DemoConfig, world: Path, engine: Any, *, progress: bool = True, save_steps: int = 0) -> str:
    """The warmed-up policy, from the cache when this exact setting ran before."""
    from zerosearch.data.qa import load_qa
    from zerosearch.training.sft import SFTConfig
    from zerosearch.training.warmup import ColdStartMix, corpus_titles, warm_start

    folder = cold_start_folder(cfg, world)
    if is_cold_start_cached(cfg, world):
        print(f"cold start: reusing {folder / 'final'}")
        return str(folder / "final")
    mix = ColdStartMix(two_hop=cfg.two_hop_share, recovery=cfg.recovery_share, verbatim=cfg.verbatim_share)
    summary = warm_start(cfg.model, load_qa(world / "train.jsonl"), engine, folder,
                         SFTConfig(lr=cfg.warmup_lr, steps=cfg.warmup_steps, batch_size=cfg.warmup_batch,
                                   warmup_steps=1, max_len=1024, save_steps=save_steps or max(cfg.warmup_steps // 2, 1),
                                   seed=cfg.seed, dtype=warmup_dtype(cfg)),
                         examples=cfg.warmup_examples, mix=mix, titles=corpus_titles(world / "corpus.jsonl"), k=cfg.k,
                         resume=True, progress=progress)
    print(f"cold start: SFT loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f}")
    return summary["model"]


def grpo_config(cfg: DemoConfig, model: str, world: Path) -> dict[str, Any]:
    """configs/smol-grpo.yaml, scaled to the demo's sizes."""
    precision = resolve_precision(cfg.precision)
    return {
        "model": {"name": model, "dtype": "float32"},
        "data": {"train": "world", "dev": None, "world_dir": str(world)},
        "engine": {"name": "simulated", "model": cfg.model, "sim_mode": "sft", "k": cfg.k, "doc_words": 20,
                   "max_new_tokens": 120, "temperature": 0.7, "batch_size": 16, "seed": cfg.seed,
                   "leak_guard": "replace", "dtype": "bfloat16" if precision == "bf16" else "auto"},
        "rollout": {"max_turns": cfg.max_turns, "max_new_tokens_per_turn": cfg.max_tokens, "max_obs_tokens": 320,
                    "max_prompt_tokens": 512, "max_total_tokens": 1280, "n": cfg.group_size, "batch_size": 16},
        "algorithm": {"name": "grpo", "kl_loss_coef": 0.001},
        "curriculum": {"p_start": 0.0, "p_end": 0.5},
        "optim": {"lr": 1e-5, "mini_batch_size": cfg.questions_per_step * cfg.group_size,
                  "micro_batch_size": 8, "sort_by_length": True, "reuse_sampler_logprobs": True,
                  "reuse_kv_cache": True, "share_prompts": True, "loss_token_logits": True,
                  "precision": precision},
        "train": {"steps": cfg.steps, "batch_size": cfg.questions_per_step, "seed": cfg.seed, "eval_every": 0,
                  "save_every": 0, "samples_per_step": 2},
    }


def _eval_bar(enabled: bool) -> Any:
    """One line per evaluated chunk with elapsed time and ETA (rich bars cannot nest inside the trainer's)."""
    if not enabled:
        return None
    first: list[float] = []  # time and done-count at the first call (run_eval reports once before any work)

    def show(done: int, total: int, method: str) -> None:
        now = time.perf_counter()
        if not first:
            first.extend((now, done))
        elapsed, new = now - first[0], done - first[1]
        # Methods differ in cost (search-agent takes turns), so the ETA is the run's average pace so far.
        eta = f", about {elapsed / new * (total - done) / 60:.1f} min to go" if new else ""
        print(f"  eval {method}: {done}/{total}  ({elapsed / 60:.1f} min{eta})", flush=True)

    return show


def write_report(run: Path, cfg: DemoConfig, before: dict[str, Any], after: dict[str, Any],
                 seconds: dict[str, float], world: Path) -> Path:
    from zerosearch.io import read_jsonl
    from zerosearch.training.metrics import plot_run

    plot_run(run / "train" / "metrics.jsonl", run / "training.png", keys=("reward", "noise_prob", "searches", "kl"))
    _plot_before_after(before, after, run / "em_before_after.png")
    metrics = read_jsonl(run / "train" / "metrics.jsonl")
    rewards = [m["reward"] for m in metrics if "reward" in m]
    lines = [
        "# zerosearch demo", "",
        f"Model `{cfg.model}`, synthetic world `{world}`, {before[cfg.methods[0]]['avg']['n']} test questions, "
        f"evaluated with real BM25 (k={cfg.k}) before and after GRPO against the simulated engine.", "",
        "| method | EM before | EM after | F1 before | F1 after | searches before | searches after |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in cfg.methods:
        b, a = before[m]["avg"], after[m]["avg"]
        lines.append(f"| {m} | {100 * b['em']:.1f} | {100 * a['em']:.1f} | {100 * b['f1']:.1f} | {100 * a['f1']:.1f} | "
                     f"{b['searches']:.2f} | {a['searches']:.2f} |")
    lines += [
        "", "The policy after training went through two steps: a cold-start SFT on protocol demonstrations "
        f"({cfg.warmup_examples} examples, {cfg.warmup_steps} steps), then GRPO ({cfg.steps} steps, "
        f"{cfg.questions_per_step} questions x {cfg.group_size} samples, {resolve_precision(cfg.precision)} "
        "forward passes). 'after' is the result of both.", "",
        f"Training reward per step: {', '.join(f'{r:.2f}' for r in rewards)}; noise probability "
        f"{metrics[0].get('noise_prob', 0):.2f} -> {metrics[-1].get('noise_prob', 0):.2f}.", "",
        *rl_contribution(run, cfg), "",
        *hops_section(run), "",
        "![training](training.png)", "", "![EM before and after](em_before_after.png)", "",
        "Wall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
        + f"; total {sum(seconds.values()) / 60:.1f} min.", "",
        "Trajectories, to look at rather than read: [viewer.html](viewer.html) (`zerosearch view`: queries, "
        "documents, noise labels, loss mask, filters).", "",
        "Files: `eval-before/`, `eval-after/` (predictions with full trajectories), `train/` (metrics.jsonl, "
        "samples.jsonl, TensorBoard, final/ policy).", "",
        "Settings: `" + json.dumps(dataclasses.asdict(cfg)) + "`",
    ]
    from zerosearch.viewer import write_page

    write_page(run, run / "viewer.html")
    report = run / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report


def rl_contribution(run: Path, cfg: DemoConfig, method: str = "search-agent") -> list[str]:
    """The search agent before / after the cold start / after RL on the same questions, and each stage's
    paired change: questions it turned right / wrong, the EM change with its 95% CI, McNemar's exact p."""
    from zerosearch.io import read_jsonl
    from zerosearch.evaluation.stats import mcnemar_exact, mde_paired, paired_delta_ci

    folders = {"before": "eval-before", "cold start": "eval-cold-start", "after": "eval-after"}
    rows = {k: {r["id"]: r for r in read_jsonl(run / f / "predictions.jsonl") if r["method"] == method}
            for k, f in folders.items() if (run / f / "predictions.jsonl").is_file()}
    if len(rows) < 3 or method not in cfg.methods:
        return []
    ids = sorted(set.intersection(*(set(r) for r in rows.values())))
    n = len(ids)
    if n == 0:
        return []
    mean = lambda stage, key: sum(float(rows[stage][q][key]) for q in ids) / max(n, 1)
    lines = [f"## What RL added ({method}, the same {n} questions, real BM25)", "",
             "| | before | cold start | after RL |", "|---|---|---|---|"]
    for key, label, scale in (("em", "EM", 100), ("f1", "F1", 100), ("searches", "searches / question", 1)):
        fmt = (lambda v: f"{scale * v:.1f}") if scale == 100 else (lambda v: f"{v:.2f}")
        lines.append(f"| {label} | " + " | ".join(fmt(mean(s, key)) for s in folders) + " |")
    lines += ["", "| change | right / wrong | EM change, points [95% CI] | McNemar p |", "|---|---|---|---|"]
    discordant = []
    for label, a, b in (("cold start (SFT) vs before", "before", "cold start"), ("**RL: after vs cold start**", "cold start", "after"),
                        ("both: after vs before", "before", "after")):
        g = sum(rows[b][q]["em"] > rows[a][q]["em"] for q in ids)
        lost = sum(rows[b][q]["em"] < rows[a][q]["em"] for q in ids)
        d, lo, hi = paired_delta_ci(g, lost, n)
        if a == "cold start":
            discordant.append((g + lost) / n)
        lines.append(f"| {label} | +{g} / -{lost} | {100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] | "
                     f"{mcnemar_exact(g, lost):.3f} |")
    psi = max(discordant[0], 1 / n)
    lines += ["", f"RL's own contribution is the middle row. With {n} paired questions and {100 * psi:.0f}% of them "
              f"discordant, a change under about {100 * mde_paired(n, psi):.0f} EM points is not detectable at 80% "
              "power (p < 0.05); `bench/replication.py` evaluates 256 questions per arm for that."]
    return lines


def hops_section(run: Path, method: str = "search-agent") -> list[str]:
    """The search agent by hops at each stage: EM, searches per question, query-copy rate
    (zerosearch.evaluation.behaviour): does the agent search twice where a question needs it, or paste the question?"""
    from zerosearch.evaluation.behaviour import by_hops, hops_markdown
    from zerosearch.io import read_jsonl

    rows = []
    for stage, folder in (("before", "eval-before"), ("cold start", "eval-cold-start"), ("after RL", "eval-after")):
        if (run / folder / "predictions.jsonl").is_file():
            rows += [{**r, "method": stage} for r in read_jsonl(run / folder / "predictions.jsonl") if r["method"] == method]
    stages = list(dict.fromkeys(r["method"] for r in rows))
    if not stages:
        return []
    return [f"## By hops ({method}, real BM25)", "", hops_markdown(by_hops(rows, stages)).replace("| method |", "| stage |")]


def _plot_before_after(before: dict[str, Any], after: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zerosearch.io import atomic_path

    methods = list(before)
    x = range(len(methods))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar([i - 0.2 for i in x], [100 * before[m]["avg"]["em"] for m in methods], 0.4, label="before")
    ax.bar([i + 0.2 for i in x], [100 * after[m]["avg"]["em"] for m in methods], 0.4, label="after")
    ax.set_xticks(list(x), methods)
    ax.set_ylabel("EM (%)")
    ax.set_title("real BM25, held-out questions")
    ax.legend()
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
