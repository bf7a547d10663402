"""What a run continues from: everything of the trainer besides the weights, saved with each checkpoint
(zerosearch.training.checkpoint) and restored by `--resume`; and the trained policy's final export.

Its own module because exact resume is a contract (a resumed run reaches the uninterrupted run's result):
whatever draws or counts across steps (optimizers, lr schedulers, the RNGs, the curriculum, the engine's
own RNG, the failed-search and collapse counters) is listed once, here, and restored in one order, the
global RNGs last so that nothing restored after them can move them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zerosearch.io import atomic_path
from zerosearch.training.checkpoint import (latest_good_checkpoint, list_checkpoints, load_checkpoint, rng_state,
                                            save_checkpoint, set_rng_state)
from zerosearch.training.curriculum import NoiseSchedule
from zerosearch.training.monitors import CollapseMonitor, FailedSearchPolicy


@dataclass
class RunState:
    """The trainer's parts that a checkpoint carries (the critic's optimizer and scheduler: PPO only).
    Built at each save / resume from the trainer's current objects, so it holds no copy of its own."""

    opt: torch.optim.Optimizer
    sched: Any  # torch.optim.lr_scheduler.LRScheduler
    schedule: NoiseSchedule
    failures: FailedSearchPolicy
    monitor: CollapseMonitor
    engine: Any  # a SearchEngine; saved when it has a state (the simulator's RNG)
    critic_opt: torch.optim.Optimizer | None = None
    critic_sched: Any = None

    def state_dict(self) -> dict[str, Any]:
        # The key order is the checkpoint's trainer.pt layout: keep it.
        state = {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "rng": rng_state(),
                 "curriculum": self.schedule.state_dict()}
        if self.critic_opt is not None:
            state.update(critic_optimizer=self.critic_opt.state_dict(), critic_scheduler=self.critic_sched.state_dict())
        if hasattr(self.engine, "state_dict"):
            state["engine"] = self.engine.state_dict()
        state.update(failures=self.failures.state_dict(), monitor=self.monitor.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.critic_opt is not None:
            self.critic_opt.load_state_dict(state["critic_optimizer"])
            self.critic_sched.load_state_dict(state["critic_scheduler"])
        self.schedule.load_state_dict(state["curriculum"])
        if "engine" in state and hasattr(self.engine, "load_state_dict"):
            self.engine.load_state_dict(state["engine"])
        if "failures" in state:  # checkpoints from before the health monitors have neither
            self.failures.load_state_dict(state["failures"])
            self.monitor.load_state_dict(state["monitor"])
        set_rng_state(state["rng"])


def save(run_dir: Path, step: int, state: RunState, *, policy: torch.nn.Module, critic: torch.nn.Module | None,
         config_yaml: str, keep: int) -> Path:
    """Checkpoint `step` (atomically; the oldest beyond `keep` removed); returns its folder."""
    return save_checkpoint(run_dir, step, policy=policy, critic=critic, trainer_state=state.state_dict(),
                           config_yaml=config_yaml, keep=keep)


def resume(run_dir: Path, state: RunState, *, policy: torch.nn.Module, critic: torch.nn.Module | None,
           config_yaml: str) -> tuple[int, Path]:
    """Load the newest checkpoint whose files match their manifest into `policy`, `critic` and `state`:
    (its step, its folder). A damaged newer one is skipped with a warning naming the file. Refused when there
    is none, or when it was saved under a different config (the run would not be the same run)."""
    if not list_checkpoints(run_dir):
        raise ValueError(f"--resume: no checkpoint under {run_dir / 'checkpoints'}")
    ckpt, skipped = latest_good_checkpoint(run_dir)
    for line in skipped:
        print(f"--resume: {line}", file=sys.stderr)
    if ckpt is None:
        raise ValueError(f"--resume: no checkpoint under {run_dir / 'checkpoints'} is intact:\n  " + "\n  ".join(skipped))
    saved = (ckpt / "config.yaml").read_text(encoding="utf-8")
    if saved != config_yaml:
        raise ValueError(f"--resume: {ckpt} was saved under a different config; resume with the same "
                         f"config (see {ckpt / 'config.yaml'})")
    loaded = load_checkpoint(ckpt, policy=policy, critic=critic)
    state.load_state_dict(loaded)
    return int(loaded["step"]), ckpt


def export_policy(policy: Any, tok: Any, out: Path, *, merge_lora: bool) -> Path:
    """The trained policy as a checkpoint `zerosearch.models.load(out)` reads (LoRA: merged in)."""
    model = policy.merge_and_unload() if merge_lora else policy
    with atomic_path(out, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return out
