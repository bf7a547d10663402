"""What `/metrics` reports: thread-safe counters and rolling latency windows.

Apart from the routes because the guard middleware, the admission check and the handlers all write to it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Any

from zerosearch.engines import Counters

LATENCY_WINDOW = 2048  # latency percentiles cover the last this many search requests


class Window:
    """The last `LATENCY_WINDOW` values of one duration (ms): count, p50, p99, mean."""

    def __init__(self) -> None:
        self._xs: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._lock = threading.Lock()

    def observe(self, ms: float) -> None:
        with self._lock:
            self._xs.append(ms)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            xs = sorted(self._xs)
        if not xs:
            return {"count": 0, "p50": None, "p99": None, "mean": None}

        def pct(p: float) -> float:  # nearest rank
            return round(xs[max(math.ceil(p * len(xs)) - 1, 0)], 3)

        return {"count": len(xs), "p50": pct(0.50), "p99": pct(0.99), "mean": round(sum(xs) / len(xs), 3)}


class Metrics:
    def __init__(self) -> None:
        # requests/queries: search requests that reached the engine stage; rejected: 4xx (by reason in
        # `reasons`); errors: 502; overloaded: 503; abandoned: client gone before its answer
        self.counters = Counters(requests=0, queries=0, errors=0, rejected=0, overloaded=0, abandoned=0)
        self.reasons = Counters()
        self.latency, self.queue_wait, self.compute = Window(), Window(), Window()
        self.started = time.monotonic()

    def reject(self, reason: str) -> None:
        self.counters.add(rejected=1)
        self.reasons.add(**{reason: 1})
