"""Peak memory of the replication's real-bm25 arm, the LM head at every response token vs only at the loss
mask's tokens (optim.loss_token_logits), in one run.

Real BM25 passages make responses long (~300 tokens), and an update that computes float32 logits over
SmolLM2's 49k vocabulary at every response token holds several GB of them. Each setting trains the arm's
first steps in its own process (peak resident memory is per process), from the same cold start and seed,
with the other exact speed options on, fp32, 1 thread; the baseline (head everywhere) is measured in the
same run.

    python bench/memory.py [--steps 2]

Prints progress to stderr and one JSON line to stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one(loss_token_logits: bool, steps: int) -> dict:
    """Train `steps` steps of the real-bm25 arm in this process; its peak RSS and the responses' length."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    import replication
    from zerosearch.training.config import TrainConfig
    from zerosearch.demo import DemoConfig, cold_start, grpo_config
    from zerosearch.engines import EngineConfig, build_engine
    from zerosearch.training.trainer import Trainer
    from zerosearch.data.world import cached_world

    torch.set_num_threads(1)
    world = cached_world()
    dcfg = DemoConfig(eval_size=256, precision="fp32", methods=["search-agent"])  # the replication's sizes
    bm25 = build_engine(EngineConfig.from_dict({"name": "bm25", "corpus": str(world / "corpus.jsonl"), "k": dcfg.k}))
    try:
        start = cold_start(dcfg, world, bm25, progress=False)
    finally:
        bm25.close()
    base = grpo_config(dcfg, start, world)
    base["train"]["samples_per_step"] = 0
    base["optim"].update(sort_by_length=True, reuse_sampler_logprobs=True, reuse_kv_cache=True, share_prompts=True,
                         loss_token_logits=loss_token_logits)
    cfg = TrainConfig.model_validate(replication.arm_config("real-bm25", base, world))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp) / "run", progress=False)
        t0 = time.perf_counter()
        metrics = [trainer.step(s) for s in range(1, steps + 1)]
        seconds = time.perf_counter() - t0
        trainer.close()
    return {"peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
            "seconds": round(seconds, 1),
            "response_tokens": [round(m.get("response_tokens", 0.0), 1) for m in metrics]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--one", choices=("on", "off"), help=argparse.SUPPRESS)  # a child process's setting
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one == "on", args.steps)))
        return
    out = {"bench": "memory", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "arm": "real-bm25",
           "steps": args.steps, "precision": "fp32", "threads": 1}
    for setting in ("off", "on"):  # the baseline first, in the same run
        print(f"loss_token_logits {setting} ...", file=sys.stderr, flush=True)
        child = subprocess.run([sys.executable, __file__, "--one", setting, "--steps", str(args.steps)],
                               capture_output=True, text=True)
        if child.returncode != 0:
            raise SystemExit(f"the {setting} run failed:\n{child.stderr[-3000:]}")
        out[f"loss_token_logits={setting}"] = json.loads(child.stdout.strip().splitlines()[-1])
    off, on = out["loss_token_logits=off"], out["loss_token_logits=on"]
    out["peak_rss_ratio_off_over_on"] = round(off["peak_rss_gb"] / on["peak_rss_gb"], 2)
    out["same_responses"] = off["response_tokens"] == on["response_tokens"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
