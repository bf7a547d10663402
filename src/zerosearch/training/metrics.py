"""Run metrics: one JSON line per step (metrics.jsonl), the same scalars in TensorBoard, sample
trajectories (samples.jsonl), and PNG plots of a finished run.

A resumed run first drops the rows logged after its checkpoint, so the files read as one clean run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zerosearch.io import append_jsonl, read_jsonl, truncate_jsonl


class MetricsLogger:
    def __init__(self, run_dir: str | Path, *, resume_step: int | None = None, tensorboard: bool = True):
        self.dir = Path(run_dir)
        self.metrics_path, self.samples_path = self.dir / "metrics.jsonl", self.dir / "samples.jsonl"
        if resume_step is not None:
            for path in (self.metrics_path, self.samples_path):  # drop steps logged after the checkpoint
                truncate_jsonl(path, keep=lambda row: row.get("step", 0) <= resume_step)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tb"), purge_step=None if resume_step is None else resume_step + 1)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        append_jsonl(self.metrics_path, {"step": step, **metrics})
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)

    def samples(self, step: int, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            append_jsonl(self.samples_path, {"step": step, **row})

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def plot_run(metrics_path: str | Path, out_png: str | Path,
             keys: Sequence[str] = ("reward", "dev/reward", "noise_prob", "kl", "response_tokens", "searches")) -> Path:
    """One panel per metric present in the run, against the step; saved atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zerosearch.io import atomic_path

    rows = read_jsonl(metrics_path, tolerate_partial_tail=True)
    present = [k for k in keys if any(k in r for r in rows)]
    if not present:
        raise ValueError(f"{metrics_path}: none of {list(keys)} was logged")
    fig, axes = plt.subplots(1, len(present), figsize=(3.6 * len(present), 3.0), squeeze=False)
    for ax, key in zip(axes[0], present):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) < 30 else None, ms=3)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(out_png)
