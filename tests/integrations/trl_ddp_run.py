"""One rank of the 2-process TRL run (launched by test_trl.py with `accelerate launch --multi_gpu
--num_processes 2` on a CPU-only machine: torchrun, gloo): the tiny run of trl_doubles, then this rank's record in OUT/rank<r>.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from trl_doubles import build, tiny_config


def main(out: Path) -> None:
    torch.set_num_threads(1)
    trainer, engine = build(tiny_config(), out / "run")
    acc = trainer.accelerator
    param_sum = lambda: float(sum(p.detach().double().sum() for p in trainer.model.parameters()))
    before = param_sum()
    trainer.train()
    ro = trainer.zerosearch_rollout
    record = {"rank": acc.process_index, "world_size": acc.num_processes, "param_sum_before": before,
              "param_sum": param_sum(), "engine_queries": sum(len(c) for calls in ro.engine_calls for c in calls),
              "noise_probs": [h["noise_prob"] for h in ro.history],
              "logged_trajectories": [h["metrics"]["zerosearch/trajectories"] for h in ro.history],
              "prompts": [[t.question for t in trajs] for trajs in ro.trajectories],
              "grad_norms": [row["grad_norm"] for row in trainer.state.log_history if "grad_norm" in row]}
    engine.close()
    (out / f"rank{acc.process_index}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
