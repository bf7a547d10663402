"""One zerosearch engine per process, shared by every trajectory (and tool call) of a veRL worker.

veRL builds an agent loop (and calls a tool) per sample; a simulator must load once, and the queries
of trajectories that run concurrently are merged into one `engine.search` call, as zerosearch's own
rollout sends all queries of a turn together (the MicroBatcher of `zerosearch serve`).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from zerosearch.engines import EngineConfig, SearchEngine, build_engine
from zerosearch.engines.base import Document, SearchRequest

_ENGINES: dict[str, SearchEngine] = {}
_LOCK = threading.Lock()


class BatchedEngine(SearchEngine):
    """`engine` behind a MicroBatcher: concurrent callers' requests go out as one batched search."""

    def __init__(self, engine: SearchEngine, *, window_s: float, max_batch: int):
        from zerosearch.engines.server import MicroBatcher

        self.inner, self.name = engine, engine.name
        self.sees_gold_answers = engine.sees_gold_answers
        self.batcher = MicroBatcher(engine, window_s=window_s, max_batch=max_batch)

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        return self.batcher.submit(requests).result()

    def identity(self) -> str:
        return self.inner.identity()

    def stats(self) -> dict[str, Any]:
        return {**self.inner.stats(), **self.batcher.stats()}

    def close(self) -> None:
        self.batcher.close()
        self.inner.close()


def shared_engine(engine: dict[str, Any], *, window_s: float = 0.02, max_batch: int = 256) -> SearchEngine:
    """The process's engine for these EngineConfig fields, built on first use."""
    key = json.dumps([engine, window_s, max_batch], sort_keys=True, default=str)
    with _LOCK:
        if key not in _ENGINES:
            cfg = EngineConfig.from_dict(dict(engine), source="zerosearch engine settings")
            _ENGINES[key] = BatchedEngine(build_engine(cfg.on_world(None)), window_s=window_s, max_batch=max_batch)
        return _ENGINES[key]


def close_engines() -> None:
    with _LOCK:
        for e in _ENGINES.values():
            e.close()
        _ENGINES.clear()
