"""One GRPO training step of the demo's shape, timed part by part: main's code path against the optimised
one, interleaved in the same run, with a check that they compute the same thing.

The shape is zerosearch.demo's (`grpo_config`): SmolLM2-135M policy (the demo's cold start, made once and
cached) and SmolLM2-135M simulator, 4 questions x 4 samples = 16 trajectories, 48 tokens per policy turn,
2 turns, the simulator writing 3 documents in <= 120 tokens.

    baseline   main's behaviour: a separate old-log-prob forward, micro-batches in random order (padded
               to their longest row), fp32, the process's default torch thread count
    optimised  the exact speed options: optim.reuse_sampler_logprobs (the sampler's log-probs are the old
               ones: no extra forward), optim.sort_by_length (micro-batches of similar length, trimmed),
               optim.reuse_kv_cache (each turn feeds only its new tokens; a GRPO group's prompt is prefilled
               once: zerosearch.agent.prefix_cache), optim.share_prompts (the log-prob and update forwards and the
               backward run a group's prompt once: zerosearch.training.packing), optim.loss_token_logits (the LM head
               only at the loss mask's tokens: zerosearch.agent.head), --threads (1: intra-op threads on an
               oversubscribed 2-core box make every op wait for the slowest core)
    bf16       optimised + optim.precision=bf16 (every forward under bf16 autocast; fp32 weights, gradients
               and optimizer) + the simulator's weights in bf16 (engine.dtype): only where this CPU has
               native bf16 (zerosearch.agent.precision). It changes the numbers, so it is checked differently.

Each repetition builds every path's trainer from the same weights and runs the same step (same
questions, same seeds), rotating which goes first, so machine load hits all alike; ratios are of the
medians. baseline and optimised must sample the same tokens (their generation is the same code; with
different thread counts float reductions differ and so may the samples: then the check says so) and, on
the same rollout, reach the same losses (to float noise). bf16 is measured against fp32 on its own
tokens: its old log-probs (bf16 sampler) against an fp32 forward of the same weights, and the share of
trajectories it samples exactly as the fp32 optimised path does.

Split: policy generation, simulator generation, old/ref log-probs, update. Tokens and FLOPs are counted
with forward hooks (exact token counts; FLOPs ~ 2 x non-embedding params per processed token, + the LM
head where logits are computed, x3 for a backward), against this CPU's fp32 peak estimated from lscpu;
decode steps/s against the memory-bandwidth bound (weights read once per step, bandwidth measured here).

    python bench/step.py [--reps 2] [--paths baseline,optimised,bf16] [--questions 4] [--group 4] [--threads 1]

Prints progress to stderr and one JSON line to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

PARTS = ("policy_generation", "simulator_generation", "logprobs", "update")

# Each path: what it changes in the demo's GRPO config (main's behaviour is every switch off, fp32).
EXACT = {"sort_by_length": True, "reuse_sampler_logprobs": True, "reuse_kv_cache": True, "share_prompts": True,
         "loss_token_logits": True}
PATHS: dict[str, dict[str, dict[str, Any]]] = {
    "baseline": {"optim": {**{k: False for k in EXACT}, "precision": "fp32"}, "engine": {"dtype": "auto"}},
    "optimised": {"optim": {**EXACT, "precision": "fp32"}, "engine": {"dtype": "auto"}},
    "bf16": {"optim": {**EXACT, "precision": "bf16"}, "engine": {"dtype": "bfloat16"}},
}


def log(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


def load_avg() -> float:
    return os.getloadavg()[0]


# --- this CPU ----------------------------------------------------------------------------------------


def cpu_peak() -> dict[str, Any]:
    """fp32 peak FLOP/s from lscpu: cores x GHz x FMA lanes x 2 (an FMA is 2 FLOPs).

    FMA lanes per cycle per core: AVX-512 with two 512-bit FMA units (Intel server cores) 32; AMD Zen 4
    runs AVX-512 on two 256-bit units, 16; AVX2 + FMA (two 256-bit units) 16; else 4 (SSE). The clock is
    lscpu's max MHz, else BogoMIPS / 2 (a KVM guest reports no MHz; BogoMIPS is twice the TSC clock)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    field = lambda name: (re.search(rf"^{name}:\s*(.+)$", text, re.M) or [None, ""])[1].strip()
    flags = set(field("Flags").split())
    vendor, family = field("Vendor ID"), field("CPU family")
    cores = int(field("CPU\\(s\\)") or os.cpu_count() or 1)
    mhz = field("CPU max MHz") or field("CPU MHz")
    ghz = float(mhz) / 1000 if mhz else float(field("BogoMIPS") or 0) / 2000
    if "avx512f" in flags:
        lanes = 16 if vendor == "AuthenticAMD" else 32
    elif "avx2" in flags and "fma" in flags:
        lanes = 16
    else:
        lanes = 4
    return {"cores": cores, "ghz": round(ghz, 2), "fma_lanes_per_cycle": lanes,
            "peak_gflops_fp32": round(cores * ghz * lanes * 2, 1),
            "bf16_native": bool(flags & {"avx512_bf16", "amx_bf16"}), "vendor": vendor, "family": family}


def bandwidth_gbs(mb: int = 256, reps: int = 3) -> float:
    """Memory bandwidth in GB/s (read + write of a copy), single-threaded: decode's bound."""
    a = torch.empty(mb * 2**20 // 4)
    b = torch.empty_like(a)
    b.copy_(a)
    best = min(_timed(lambda: b.copy_(a)) for _ in range(reps))
    return 2 * a.numel() * 4 / best / 1e9


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# --- token counting ----------------------------------------------------------------------------------


class Tokens:
    """Hooks on the decoder and the LM head: padded and real tokens processed, logit rows computed, and
    forward calls. The decoder, not the whole model: the loss-token head (zerosearch.agent.head) calls the
    decoder and the head separately."""

    def __init__(self, model: Any):
        self.padded = self.real = self.logits = self.calls = 0
        self.handles = [model.get_decoder().register_forward_pre_hook(self._body, with_kwargs=True),
                        model.get_output_embeddings().register_forward_hook(self._head)]

    def _body(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids")
        if ids is None:
            return
        mask = kwargs.get("attention_mask")
        self.calls += 1
        self.padded += ids.numel()
        # generate passes the whole mask (past + new); only the new positions are computed
        self.real += int(mask[:, -ids.shape[1]:].sum()) if mask is not None else ids.numel()

    def _head(self, module: Any, args: Any, out: Any) -> None:
        self.logits += out.numel() // out.shape[-1]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def snapshot(self) -> dict[str, int]:
        return {"padded": self.padded, "real": self.real, "logits": self.logits, "calls": self.calls}


def diff(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: b[k] - a[k] for k in a}


def flops(tok: dict[str, int], n_body: int, head: int, backward: bool = False) -> float:
    """2 x body params per processed (padded: padding is computed too) token + 2 x head per logit row."""
    f = 2.0 * n_body * tok["padded"] + 2.0 * head * tok["logits"]
    return 3 * f if backward else f


# --- one step --------------------------------------------------------------------------------------------


def build(base: dict[str, Any], path: str, run_dir: Path) -> Any:
    from zerosearch.training.config import TrainConfig
    from zerosearch.training.trainer import Trainer

    cfg = copy.deepcopy(base)
    for section, changes in PATHS[path].items():
        cfg[section].update(changes)
    return Trainer(TrainConfig.model_validate(cfg), run_dir, progress=False)


def one_step(trainer: Any, step: int, threads: int) -> dict[str, Any]:
    """Trainer.step's stages, each timed, with tokens counted per model."""
    from zerosearch.agent.rollout import collate, rollout

    torch.set_num_threads(threads)
    n_body = sum(p.numel() for n, p in trainer.policy.named_parameters() if "embed_tokens" not in n)
    head = trainer.policy.config.hidden_size * trainer.policy.config.vocab_size
    sim = trainer.engine.backend.model
    counters = {"policy": Tokens(trainer.policy), "simulator": Tokens(sim)}
    if trainer.ref is not None:
        counters["ref"] = Tokens(trainer.ref)
    snap = lambda: {k: c.snapshot() for k, c in counters.items()}
    try:
        s0, t0 = snap(), time.perf_counter()
        ro = rollout(trainer.batch_records(step), trainer.backend, trainer.tok, trainer.engine, trainer.rollout_cfg,
                     noise_prob=trainer.schedule(step), seed=trainer.cfg.train.seed * 1_000_003 + step)
        t_roll, s1 = time.perf_counter() - t0, snap()
        batch = collate(ro, trainer.tok.pad_token_id)
        t1 = time.perf_counter()
        rb = trainer._rollout_batch(ro, batch)
        t_lp, s2 = time.perf_counter() - t1, snap()
        # untimed, and its tokens counted in neither part: the fp32 reference for a bf16 path's log-probs
        fp32 = _fp32_logprobs(trainer, batch) if trainer.cfg.optim.precision != "fp32" else None
        s2u = snap()
        adv, returns = trainer.algo.compute_advantages(rb)
        rb = dataclasses.replace(rb, advantages=adv, returns=returns)
        t2 = time.perf_counter()
        upd = trainer.update(batch, rb, step)
        t_upd, s3 = time.perf_counter() - t2, snap()
    finally:
        for c in counters.values():
            c.remove()
    gen = diff(s0["policy"], s1["policy"])
    simt = diff(s0["simulator"], s1["simulator"])
    lp = diff(s1["policy"], s2["policy"])
    if "ref" in counters:
        lp = {k: lp[k] + diff(s1["ref"], s2["ref"])[k] for k in lp}
    up = diff(s2u["policy"], s3["policy"])
    seconds = {"policy_generation": ro.stats.gen_seconds, "simulator_generation": ro.stats.engine_seconds,
               "logprobs": t_lp, "update": t_upd}
    seconds["other_rollout"] = t_roll - ro.stats.gen_seconds - ro.stats.engine_seconds
    seconds["step"] = t_roll + t_lp + t_upd + 0.0
    work = {"policy_generation": flops(gen, n_body, head), "simulator_generation": flops(simt, n_body, head),
            "logprobs": flops(lp, n_body, head), "update": flops(up, n_body, head, backward=True)}
    return {"seconds": seconds, "flops": work, "tokens": {"policy_generation": gen, "simulator_generation": simt,
                                                          "logprobs": lp, "update": up},
            "load": load_avg(), "response_ids": [t.response_ids for t in ro],
            "old_logp": rb.old_logp, "mask": rb.mask, "update_stats": upd, "fp32_logp": fp32,
            "searches": ro.stats.mean_searches, "kv_cache": _kv_stats(trainer.backend),
            "n_params": sum(p.numel() for p in trainer.policy.parameters()),
            "generated_tokens": ro.stats.generated_tokens}


def _fp32_logprobs(trainer: Any, batch: dict[str, Any]) -> Any:
    """The old log-probs recomputed in plain fp32 by the same (not yet updated) weights."""
    from zerosearch.agent.rollout import compute_logprobs

    trainer.policy.eval()
    return compute_logprobs(trainer.policy, batch, trainer._temperature(), trainer.cfg.optim.micro_batch_size).cpu()


def _kv_stats(backend: Any) -> dict[str, int] | None:
    """Prompt tokens the policy's generation took from its KV cache vs fed to the model (None: no cache)."""
    p = getattr(backend, "prefix", None)
    return None if p is None else {"reused_prompt_tokens": p.reused, "fed_prompt_tokens": p.fed}


def probe_threads_and_dtype(model_name: str, threads: list[int], rows: int = 16, new: int = 16,
                            reps: int = 2) -> dict[str, float]:
    """Greedy decode steps/s of the simulator's model at each thread count (fp32), and at 1 thread in bf16
    when this CPU has native bf16: interleaved repetitions, best of each. The thread setting that holds
    under load is the one to ship."""
    from zerosearch.models import load

    model, _ = load(model_name)
    model.eval()
    ids = torch.randint(100, 20000, (rows, 64), generator=torch.Generator().manual_seed(0))
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new, do_sample=False,
              temperature=None, top_p=None, top_k=None)
    variants = [(f"fp32/{t}t", t, torch.float32) for t in threads]
    if cpu_peak()["bf16_native"]:
        variants.append(("bf16/1t", 1, torch.bfloat16))
    best: dict[str, float] = {}
    before = torch.get_num_threads()
    for _ in range(reps):
        for name, t, dt in variants:
            torch.set_num_threads(t)
            m = model.to(dt)
            with torch.inference_mode():
                sec = _timed(lambda: m.generate(input_ids=ids, **kw))
            best[name] = max(best.get(name, 0.0), round(new / sec, 2))
            log(f"  probe {name}: {new / sec:.2f} decode steps/s (load {load_avg():.1f})")
    torch.set_num_threads(before)
    return best


def policy_start(args: argparse.Namespace, world: Path) -> str:
    if args.policy:
        return args.policy
    from zerosearch.demo import QUICK, DemoConfig, cold_start
    from zerosearch.engines import EngineConfig, build_engine

    dcfg = DemoConfig(**QUICK)
    bm25 = build_engine(EngineConfig.from_dict({"name": "bm25", "corpus": str(world / "corpus.jsonl"), "k": dcfg.k}))
    try:  # its messages to stderr: stdout carries the JSON line only
        with contextlib.redirect_stdout(sys.stderr):
            return cold_start(dcfg, world, bm25, progress=False)
    finally:
        bm25.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=2, help="interleaved repetitions of each path")
    ap.add_argument("--paths", default=",".join(PATHS),
                    help="which paths, baseline first (bf16 is dropped where this CPU has no native bf16)")
    ap.add_argument("--questions", type=int, default=4)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="the optimised path's torch threads")
    ap.add_argument("--baseline-threads", type=int, default=torch.get_num_threads(),
                    help="main's: torch's default for this process (OMP_NUM_THREADS or the core count)")
    ap.add_argument("--policy", default=None, help="default: the quick demo's cold start (cached)")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="the simulator")
    ap.add_argument("--probe", action="store_true", help="also time decode at 1 vs baseline threads, and bf16")
    args = ap.parse_args()

    from zerosearch.demo import DemoConfig, grpo_config
    from zerosearch.data.world import cached_world

    world = cached_world()
    start = policy_start(args, world)
    dcfg = DemoConfig(model=args.model, questions_per_step=args.questions, group_size=args.group)
    base = grpo_config(dcfg, start, world)
    base["train"]["samples_per_step"] = 0
    cpu, bw = cpu_peak(), bandwidth_gbs()
    log(f"cpu {cpu}; bandwidth {bw:.1f} GB/s; policy {start}")

    paths = [p for p in args.paths.split(",") if p]
    unknown = sorted(set(paths) - set(PATHS))
    if unknown or not paths or paths[0] != "baseline":
        raise SystemExit(f"--paths: choose from {', '.join(PATHS)}, baseline first (got {args.paths!r})")
    if "bf16" in paths and not cpu["bf16_native"]:
        log("no native bf16 on this CPU: the bf16 path is left out (it would be emulated, slower than fp32)")
        paths.remove("bf16")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    checks: list[dict[str, Any]] = []
    bf16_checks: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-step-") as tmp:
        for rep in range(args.reps):
            order = paths[rep % len(paths):] + paths[: rep % len(paths)]  # rotate who goes first
            got = {}
            for name in order:
                trainer = build(base, name, Path(tmp) / f"{name}-{rep}")
                threads = args.baseline_threads if name == "baseline" else args.threads
                log(f"rep {rep} {name} (threads {threads}, load {load_avg():.1f}) ...")
                r = one_step(trainer, 1, threads)
                trainer.close()
                del trainer
                log(f"  {name}: " + ", ".join(f"{k} {v:.1f}s" for k, v in r["seconds"].items()) + f" (load {r['load']:.1f})")
                got[name] = r
                runs[name].append(r)
            if "optimised" in got:
                checks.append(same_results(got["baseline"], got["optimised"]))
            if "bf16" in got:
                bf16_checks.append(bf16_agreement(got["bf16"], got.get("optimised", got["baseline"])))

    med = {name: {p: statistics.median(r["seconds"][p] for r in rs) for p in (*PARTS, "other_rollout", "step")}
           for name, rs in runs.items()}
    fast = [n for n in paths if n != "baseline"]
    out: dict[str, Any] = {
        "bench": "step", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {cpu['vendor']} family {cpu['family']}, {cpu['cores']} cores, torch {torch.__version__}",
        "shape": {"trajectories": args.questions * args.group, "max_tokens_per_turn": dcfg.max_tokens, "max_turns": 2,
                  "simulator_max_new_tokens": base["engine"]["max_new_tokens"]},
        "threads": {n: args.baseline_threads if n == "baseline" else args.threads for n in paths}, "reps": args.reps,
        "load_1min": [round(r["load"], 1) for rs in runs.values() for r in rs],
        "seconds": {n: {p: round(v, 1) for p, v in m.items()} for n, m in med.items()},
        "cpu_peak_gflops_fp32": cpu["peak_gflops_fp32"], "bandwidth_gbs": round(bw, 1),
        "bf16_native": cpu["bf16_native"],
    }
    for n in fast:  # "speedup_step" is the exact path's (the headline of runs 1-4), "speedup_step/bf16" bf16's
        key = "" if n == "optimised" else f"/{n}"
        out[f"speedup_step{key}"] = round(med["baseline"]["step"] / med[n]["step"], 2)
        out[f"speedup{key}"] = {p: round(med["baseline"][p] / med[n][p], 2) if med[n][p] > 0 else None for p in PARTS}
    for name, rs in runs.items():
        r = rs[0]
        achieved = {p: round(r["flops"][p] / r["seconds"][p] / 1e9, 1) if r["seconds"][p] > 0 else None for p in PARTS}
        out[f"gflops/{name}"] = achieved
        out[f"tokens/{name}"] = {p: r["tokens"][p] for p in PARTS}
        out[f"kv_cache/{name}"] = r["kv_cache"]
        out[f"pct_of_peak/{name}"] = {p: round(100 * v / cpu["peak_gflops_fp32"], 1) for p, v in achieved.items() if v}
        for part in ("policy_generation", "simulator_generation"):
            tok = r["tokens"][part]
            out[f"decode_steps_per_s/{name}/{part}"] = round(tok["calls"] / r["seconds"][part], 2) if r["seconds"][part] else None
    # fp32 weights, each read once per decode step (a batch shares the read)
    out["decode_steps_per_s_bound"] = round(bw * 1e9 / (4 * runs["baseline"][0]["n_params"]), 1)
    out["same_results"] = checks
    if bf16_checks:
        out["bf16_vs_fp32"] = bf16_checks
    if args.probe:
        ts = sorted({1, args.baseline_threads, os.cpu_count() or 1})
        out["probe_decode_steps_per_s"] = probe_threads_and_dtype(args.model, ts)
        out["load_1min_after_probe"] = round(load_avg(), 1)
    print(json.dumps(out))


def same_results(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Same sampled tokens; old log-probs and losses equal to float noise (on the same rollout only)."""
    same_tokens = a["response_ids"] == b["response_ids"]
    out: dict[str, Any] = {"same_tokens": same_tokens}
    if same_tokens:
        m = a["mask"].bool()
        out["old_logp_max_abs_diff"] = float((a["old_logp"][m] - b["old_logp"][m]).abs().max()) if m.any() else 0.0
        out["loss_abs_diff"] = {k: abs(a["update_stats"][k] - b["update_stats"][k])
                                for k in a["update_stats"] if k in b["update_stats"] and k != "lr"}
    return out


def bf16_agreement(b: dict[str, Any], fp32_path: dict[str, Any]) -> dict[str, Any]:
    """How far bf16 moves the numbers: its old log-probs (sampled under bf16 autocast) against plain fp32
    log-probs of the same tokens and weights, on the trained (masked) tokens; and the share of
    trajectories it samples token for token as the fp32 path did from the same seeds."""
    m = b["mask"].bool()
    d = (b["old_logp"][m] - b["fp32_logp"][m]).abs()
    same = [x == y for x, y in zip(b["response_ids"], fp32_path["response_ids"])]
    return {"old_logp_max_abs_diff_vs_fp32": round(float(d.max()), 4) if m.any() else 0.0,
            "old_logp_mean_abs_diff_vs_fp32": round(float(d.mean()), 5) if m.any() else 0.0,
            "same_trajectories": f"{sum(same)}/{len(same)}"}


if __name__ == "__main__":
    main()
