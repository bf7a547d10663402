"""The TrainerCallback that puts the rollout statistics into TRL's log lines and metrics.jsonl."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from zerosearch.integrations.trl.deps import TrainerCallback
from zerosearch.integrations.trl.rollout import ZeroSearchRollout


class ZeroSearchCallback(TrainerCallback):  # type: ignore[misc,valid-type]
    """Adds the rollout statistics since the last log (turns, searches, noise probability, useful/noisy
    draws, engine fallbacks and leak counters, truncation, ...) to TRL's log line, and, on the main
    process, appends the line to `metrics_path` (metrics.jsonl, as `zerosearch train` writes)."""

    def __init__(self, rollout_func: ZeroSearchRollout, metrics_path: str | Path | None = None):
        self.rollout_func = rollout_func
        self.metrics_path = None if metrics_path is None else Path(metrics_path)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any) -> None:
        if logs is None:
            return
        extra = self.rollout_func.pop_metrics()
        logs.update(extra)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)  # Trainer.log appended its copy before calling callbacks
        if self.metrics_path is not None and state.is_world_process_zero:
            from zerosearch.io import append_jsonl

            row = {"step": state.global_step, **{k: v for k, v in logs.items() if _is_number(v)}}
            append_jsonl(self.metrics_path, row)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
