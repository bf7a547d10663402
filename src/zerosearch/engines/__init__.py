"""Search engines: real ones (bm25, dense, http, serpapi) and the simulator, behind one interface.

`build_engine(cfg)` is the only constructor the commands use. Engine modules are imported on demand, so
importing this package costs neither torch nor bm25s.
"""

from __future__ import annotations

import pkgutil
import threading
from typing import Any

from zerosearch.engines.base import DocMode, Document, SearchEngine, SearchRequest, format_documents
from zerosearch.engines.config import ENGINES, EngineConfig, add_engine_arguments

__all__ = [
    "Counters", "DocMode", "Document", "ENGINES", "EngineConfig", "SearchEngine", "SearchError",
    "SearchRequest", "add_engine_arguments", "build_engine", "format_documents",
]


class SearchError(RuntimeError):
    """A search that could not be served (server down after retries, bad response, unusable cache)."""


class Counters:
    """Thread-safe running totals behind an engine's `stats()`."""

    def __init__(self, **initial: float):
        self._values: dict[str, float] = dict(initial)
        self._lock = threading.Lock()

    def add(self, **deltas: float) -> None:
        with self._lock:
            for key, value in deltas.items():
                self._values[key] = self._values.get(key, 0) + value

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._values)


def build_engine(cfg: EngineConfig) -> SearchEngine:
    """The engine `cfg` names, behind the SQLite cache when `cfg.cache` is set (real engines only)."""
    if cfg.name in ("simulated", "self") and cfg.cache:
        # The simulator samples fresh documents on each call (the curriculum depends on it), and `self`
        # writes them with weights that change every step: caching would freeze one sample per query.
        raise ValueError(f"--cache applies to real engines only (bm25, dense, http, serpapi), not to {cfg.name!r}")
    engine = pkgutil.resolve_name(ENGINES[cfg.name]).from_config(cfg)
    if cfg.cache:
        from zerosearch.engines.cache import CachedEngine

        try:
            return CachedEngine(engine, cfg.cache)
        except BaseException:
            engine.close()
            raise
    return engine
