"""Training health: is the engine answering, is this step worth training on, is the run collapsing?

Pure functions and small classes on a step's trajectories and metrics, so each rule is tested on
scripted inputs (a dead engine, a falling reward, an exploding KL, a NaN) without a model:

- `check_engine`: one real query at start-up; a dead, hanging or garbage engine fails the run in its
  first seconds with one line, instead of after steps trained on "No results found.".
- `search_failures` + `FailedSearchPolicy`: a step whose searches failed beyond a share is skipped (not
  trained on) and counted; after `max_consecutive` skipped steps in a row the run stops (`TrainingHalted`).
- `EngineCounters`: the engine's own counters (leak guard, fallbacks, parse repairs, ...) as per-step deltas.
- `CollapseMonitor`: the signs of a collapsing RL run (the most reported GRPO failure): reward falling
  from its peak, entropy or KL blowing up, responses running away in length, the valid-action rate
  dropping, non-finite log-probs. Each raises a named alarm; `stop_on_collapse` turns a lasting alarm into
  a stop. Thresholds are `monitor:` settings (config.MonitorSection).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zerosearch.engines.base import Document, SearchEngine, SearchRequest

FALLBACK_TEXT = "No results found."  # what the simulator (and the rollout's fallback) shows for a failed search


class EngineCheckError(ValueError):
    """An engine failed its start-up query (a ValueError, so the CLI prints it as one line)."""


class TrainingHalted(RuntimeError):
    """The run stopped on purpose (searches kept failing, or a collapse alarm lasted): the message says why
    and which checkpoint is the last good one."""


def failed_result(docs: Sequence[Document]) -> bool:
    """A search the engine failed at: its "No results found." fallback (flagged, or that text).

    An empty list is *not* a failure: it is what a working BM25 answers to a query none of whose terms is
    in the corpus, and what a simulator answers when it wrote nothing parseable; the policy sees "no
    results" and learns from it (Search-R1 and ZeroSearch train on such turns). Counting it as failed
    skipped most of an early real-BM25 run, whose queries are often poor."""
    return any(d.meta.get("fallback") or d.text.strip() == FALLBACK_TEXT for d in docs)


def check_engine(engine: SearchEngine, request: SearchRequest, role: str) -> None:
    """Send one real query; raise EngineCheckError (one line) if it errs or comes back empty/fallback.
    An engine with RNG state (the simulator) gets it back afterwards: the check changes no training draw."""
    state = engine.state_dict() if hasattr(engine, "state_dict") else None
    try:
        [docs] = engine.search([request])
    except Exception as e:  # noqa: BLE001 - any failure here is the same verdict: the engine is unusable
        raise EngineCheckError(f"{role} engine {engine.identity()!r} failed its start-up query "
                               f"{request.query!r}: {type(e).__name__}: {e}") from None
    finally:
        if state is not None:
            engine.load_state_dict(state)
    if not docs or failed_result(docs):  # the start-up query is a real question: it must find something
        why = next((str(d.meta["error"]) for d in docs if d.meta.get("error")), None)
        raise EngineCheckError(f"{role} engine {engine.identity()!r} returned no usable documents for its start-up "
                               f"query {request.query!r}" + (f" ({why})" if why else "") +
                               "; check the endpoint / corpus before training on failed searches")


def search_failures(documents_per_row: Sequence[Sequence[Sequence[Document]]]) -> tuple[int, int]:
    """(failed, total) searches over a rollout: per row, the documents of each of its searches."""
    results = [docs for row in documents_per_row for docs in row]
    return sum(failed_result(d) for d in results), len(results)


@dataclass
class FailedSearchPolicy:
    """Skip a step whose failed-search share exceeds `max_share`; halt after `max_consecutive` skips in a row."""

    max_share: float = 0.5
    max_consecutive: int = 3
    consecutive: int = 0
    skipped: int = 0

    def skip(self, failed: int, total: int) -> bool:
        """Record one step; True if it must not be trained on. Raises TrainingHalted at the limit."""
        bad = total > 0 and failed / total > self.max_share
        return self.record(bad, f"{failed} of {total} searches failed (limit {self.max_share:.0%})")

    def record(self, bad: bool, why: str) -> bool:
        if not bad:
            self.consecutive = 0
            return False
        self.consecutive += 1
        self.skipped += 1
        if self.consecutive >= self.max_consecutive:
            raise TrainingHalted(f"{self.consecutive} steps in a row skipped, the last because {why}")
        return True

    def state_dict(self) -> dict[str, int]:
        return {"consecutive": self.consecutive, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consecutive, self.skipped = int(state["consecutive"]), int(state["skipped"])


class EngineCounters:
    """Per-step deltas of `engine.stats()`'s numeric counters, prefixed (`engine/leak_flagged`, ...)."""

    def __init__(self, engine: SearchEngine, prefix: str = "engine/"):
        self.engine, self.prefix = engine, prefix
        self._last = self._numeric()

    def _numeric(self) -> dict[str, float]:
        return {k: v for k, v in self.engine.stats().items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def delta(self) -> dict[str, float]:
        now = self._numeric()
        out = {f"{self.prefix}{k}": v - self._last.get(k, 0) for k, v in now.items()}
        self._last = now
        return out


# Counters worth a word in the progress line when a step moved them (leak guard, failed searches).
SHOWN_COUNTERS = ("leak_suspicious", "leak_flagged", "leak_replaced", "fallbacks", "errors", "empty_results")


def counter_note(metrics: dict[str, Any], prefix: str = "engine/") -> str:
    """`leak_flagged 2  fallbacks 1`: the shown counters a step moved, for the progress line."""
    return "  ".join(f"{k} {metrics[prefix + k]:g}" for k in SHOWN_COUNTERS if metrics.get(prefix + k))


# --- collapse ---------------------------------------------------------------------------------------------

@dataclass
class MonitorSettings:
    """Mirror of config.MonitorSection (kept free of pydantic so the rules are testable on their own)."""

    window: int = 5
    reward_drop: float | None = 0.5
    min_reward: float = 0.05
    entropy_growth: float | None = 3.0
    kl_max: float | None = 1.0
    length_growth: float | None = 2.0
    valid_action_drop: float | None = 0.5
    stop_on_collapse: bool = False
    patience: int = 3


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


@dataclass
class _Series:
    """A metric's last `window` values, the mean of its first full window, and its best window mean."""

    window: int
    recent: deque = field(default_factory=deque)
    first: float | None = None
    best: float | None = None

    def add(self, x: float) -> float | None:
        """Append x; the current window mean once the window is full, else None."""
        self.recent.append(x)
        if len(self.recent) > self.window:
            self.recent.popleft()
        if len(self.recent) < self.window:
            return None
        m = _mean(self.recent)
        self.first = m if self.first is None else self.first
        self.best = m if self.best is None else max(self.best, m)
        return m


class CollapseMonitor:
    """`alarms = monitor.update(metrics)`: the names of the thresholds this step's metrics cross.

    Rules (each off when its setting is None; means over the last `window` steps):
      reward        mean reward < (1 - reward_drop) x its best window mean, once that best > min_reward
      entropy       mean entropy > entropy_growth x its first window mean
      kl            this step's KL to the reference > kl_max
      length        mean response tokens > length_growth x its first window mean
      valid_action  mean valid-action rate (or answered rate) < (1 - valid_action_drop) x its best
      nonfinite     any NaN/inf among the log-probs or losses of the step (`nonfinite` metric > 0)
    `should_stop()` is True once some alarm has fired `patience` steps in a row and stop_on_collapse is set.
    """

    def __init__(self, settings: MonitorSettings):
        self.s = settings
        self.series = {k: _Series(settings.window) for k in
                       ("reward", "entropy", "response_tokens", "valid_action_rate", "answered_rate")}
        self.streak = 0

    def update(self, m: dict[str, Any]) -> list[str]:
        s, alarms = self.s, []
        means = {k: (self.series[k].add(float(m[k])) if _finite(m.get(k)) else None) for k in self.series}
        r = self.series["reward"]
        if s.reward_drop is not None and means["reward"] is not None and r.best is not None and \
                r.best > s.min_reward and means["reward"] < (1 - s.reward_drop) * r.best:
            alarms.append("reward")
        e = self.series["entropy"]
        if s.entropy_growth is not None and means["entropy"] is not None and e.first and \
                means["entropy"] > s.entropy_growth * e.first:
            alarms.append("entropy")
        if s.kl_max is not None and "kl" in m and (not _finite(m["kl"]) or m["kl"] > s.kl_max):
            alarms.append("kl")
        n = self.series["response_tokens"]
        if s.length_growth is not None and means["response_tokens"] is not None and n.first and \
                means["response_tokens"] > s.length_growth * n.first:
            alarms.append("length")
        if s.valid_action_drop is not None:
            for k in ("valid_action_rate", "answered_rate"):
                v = self.series[k]
                if means[k] is not None and v.best and means[k] < (1 - s.valid_action_drop) * v.best:
                    alarms.append("valid_action")
                    break
        if m.get("nonfinite", 0) > 0 or any(isinstance(v, float) and not math.isfinite(v)
                                            for k, v in m.items() if k.endswith("loss")):
            alarms.append("nonfinite")
        self.streak = self.streak + 1 if alarms else 0
        return alarms

    def should_stop(self) -> bool:
        return self.s.stop_on_collapse and self.streak >= self.s.patience

    def state_dict(self) -> dict[str, Any]:
        return {"streak": self.streak, "series": {k: {"recent": list(v.recent), "first": v.first, "best": v.best}
                                                  for k, v in self.series.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.streak = int(state["streak"])
        for k, v in state["series"].items():
            self.series[k] = _Series(self.s.window, deque(v["recent"]), v["first"], v["best"])


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
