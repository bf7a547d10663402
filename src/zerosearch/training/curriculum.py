"""Noise schedules for the simulated engine: how likely a query is answered with *noisy* documents.

ZeroSearch's curriculum (paper eq. 1) raises the noise probability from `p_start` to `p_end` over the
`total_steps` training steps along an exponential curve with base `b` (4 in the paper):

    p(i) = p_s + (b^(i/m) - 1) / (b - 1) * (p_e - p_s)

so the policy first learns the search protocol on mostly useful documents and meets noisy ones late.
The "random" ablation of the paper keeps p fixed (0.5); `FixedSchedule` gives it the same interface.
The probability is computed per training step and drawn per query by the engine
(`zerosearch.engines.noise.draw_mode`, re-exported here); the turn does not matter.
"""

from __future__ import annotations

import abc
import math
from typing import Any

from zerosearch.engines.noise import check_prob as _check_prob
from zerosearch.engines.noise import draw_mode

__all__ = ["Curriculum", "FixedSchedule", "NoiseSchedule", "draw_mode", "schedule_from_state"]


class NoiseSchedule(abc.ABC):
    """p(step): the probability that a query at this training step gets noisy documents."""

    kind: str

    @abc.abstractmethod
    def p(self, step: int) -> float: ...

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def __call__(self, step: int) -> float:
        return self.p(step)


class Curriculum(NoiseSchedule):
    """The paper's exponential curriculum from `p_start` (step 0) to `p_end` (step `total_steps`).

    Steps outside [0, total_steps] are clamped, so extra steps (e.g. a resumed run that trains longer)
    stay at `p_end`. `base` > 1 rises slowly then fast, `base` < 1 the reverse, `base` == 1 is linear
    (the limit of the formula).
    """

    kind = "curriculum"

    def __init__(self, p_start: float, p_end: float, total_steps: int, base: float = 4.0):
        self.p_start = _check_prob("p_start", p_start)
        self.p_end = _check_prob("p_end", p_end)
        if isinstance(total_steps, bool) or int(total_steps) != total_steps or total_steps <= 0:
            raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
        self.total_steps = int(total_steps)
        base = float(base)
        if not (base > 0 and math.isfinite(base)):
            raise ValueError(f"base must be a finite number > 0, got {base}")
        self.base = base

    def p(self, step: int) -> float:
        x = min(max(step / self.total_steps, 0.0), 1.0)
        # (b^x - 1)/(b - 1) -> x as b -> 1; the plain formula would divide by ~0 there.
        frac = x if abs(self.base - 1.0) < 1e-9 else math.expm1(x * math.log(self.base)) / (self.base - 1.0)
        return self.p_start + frac * (self.p_end - self.p_start)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "p_start": self.p_start, "p_end": self.p_end,
                "total_steps": self.total_steps, "base": self.base}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"cannot load a {state.get('kind')!r} schedule into a {self.kind!r} one")
        self.__init__(state["p_start"], state["p_end"], state["total_steps"], state["base"])  # validates

    def __repr__(self) -> str:
        return (f"Curriculum(p_start={self.p_start}, p_end={self.p_end}, total_steps={self.total_steps}, "
                f"base={self.base})")


class FixedSchedule(NoiseSchedule):
    """A constant noise probability: the paper's 'random' ablation (p = 0.5), or p = 0 for useful only."""

    kind = "fixed"

    def __init__(self, p: float):
        self.value = _check_prob("p", p)

    def p(self, step: int) -> float:
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "p": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"cannot load a {state.get('kind')!r} schedule into a {self.kind!r} one")
        self.value = _check_prob("p", state["p"])

    def __repr__(self) -> str:
        return f"FixedSchedule(p={self.value})"


def schedule_from_state(state: dict[str, Any]) -> NoiseSchedule:
    """Rebuild whichever schedule a checkpoint saved (the trainer need not know its kind in advance)."""
    if state.get("kind") == Curriculum.kind:
        return Curriculum(state["p_start"], state["p_end"], state["total_steps"], state["base"])
    if state.get("kind") == FixedSchedule.kind:
        return FixedSchedule(state["p"])
    raise ValueError(f"unknown noise schedule kind {state.get('kind')!r}")
