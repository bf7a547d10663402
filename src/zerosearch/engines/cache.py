"""A persistent SQLite cache in front of a real engine, keyed by (engine identity, query, k).

Collection and evaluation ask real engines the same queries again and again; paid APIs bill each one.
A batch is looked up first and only its misses go to the engine, in one call. One connection guarded
by a lock serves all threads; WAL mode lets several processes (workers of one run) share the file.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zerosearch.engines import Counters, SearchError
from zerosearch.engines.base import Document, SearchEngine, SearchRequest

_BUSY_TIMEOUT_S = 30.0
_SCHEMA = """CREATE TABLE IF NOT EXISTS results (
    identity TEXT NOT NULL, query TEXT NOT NULL, k INTEGER NOT NULL,
    docs TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (identity, query, k)) WITHOUT ROWID"""


class CachedEngine(SearchEngine):
    def __init__(self, engine: SearchEngine, path: str | Path):
        self.inner = engine
        self.name = engine.name
        self.sees_gold_answers = engine.sees_gold_answers
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.counters = Counters(hits=0, misses=0)
        with self._db_errors("open"):
            self._db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            self._db.commit()

    @contextlib.contextmanager
    def _db_errors(self, action: str) -> Iterator[None]:
        """sqlite3's errors name neither the file nor a way out; these do."""
        try:
            yield
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise SearchError(f"search cache {self.path}: still locked by another process after "
                                  f"{_BUSY_TIMEOUT_S:.0f} s ({action})") from e
            raise SearchError(f"search cache {self.path}: cannot {action} ({e})") from e
        except sqlite3.DatabaseError as e:
            raise SearchError(f"search cache {self.path}: unreadable ({e}); it holds only cached results, "
                              "so deleting it is safe") from e

    def identity(self) -> str:
        return self.inner.identity()  # caching never changes results

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        identity = self.inner.identity()
        keys = [(r.query, r.k) for r in requests]
        with self._lock, self._db_errors("read"):
            found = {}
            for key in dict.fromkeys(keys):
                row = self._db.execute("SELECT docs FROM results WHERE identity = ? AND query = ? AND k = ?",
                                       (identity, *key)).fetchone()
                if row is not None:
                    found[key] = row[0]
        # A query asked twice in one batch goes to the engine once.
        missing = {key: req for key, req in zip(keys, requests) if key not in found}
        if missing:
            results = self.inner.search(list(missing.values()))
            rows = [(identity, *key, json.dumps([d.to_dict() for d in docs], ensure_ascii=False), time.time())
                    for key, docs in zip(missing, results, strict=True)]  # an engine owes one list per request
            with self._lock, self._db_errors("write"), self._db:  # `with db`: one transaction
                self._db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?)", rows)
            found.update((row[1:3], row[3]) for row in rows)
        hits = sum(key not in missing for key in keys)
        self.counters.add(hits=hits, misses=len(keys) - hits)
        # Decoded per request, so callers never share (and mutate) one Document.
        return [[Document.from_dict(d) for d in json.loads(found[key])] for key in keys]

    def stats(self) -> dict[str, Any]:
        c = self.counters.snapshot()
        total = c["hits"] + c["misses"]
        return {**self.inner.stats(), "cache_hits": c["hits"], "cache_misses": c["misses"],
                "cache_hit_rate": c["hits"] / total if total else 0.0}

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self.inner.close()
