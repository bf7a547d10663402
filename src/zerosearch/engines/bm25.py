"""BM25 over a local JSONL corpus with bm25s (English stop-words, Snowball stemmer).

The index is built once into a folder beside the corpus (or under `index_dir`) and reused until the
corpus changes. Only passages sharing a term with the query are returned, so a query may get fewer
than k documents (none for an empty one).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import Stemmer

from zerosearch.engines import Counters
from zerosearch.engines.base import Document, SearchEngine, SearchRequest
from zerosearch.engines.config import EngineConfig
from zerosearch.engines.corpus import open_index

_LANGUAGE = "english"


class BM25Engine(SearchEngine):
    name = "bm25"

    def __init__(self, corpus: str | Path, *, index_dir: str | None = None, duplicate_ids: str = "error"):
        t0 = time.perf_counter()
        self._stemmer = Stemmer.Stemmer(_LANGUAGE)
        self._stemmer_lock = threading.Lock()  # PyStemmer objects are not thread-safe
        # Besides the corpus, everything the saved index depends on; a change rebuilds it.
        params = {"stemmer": _LANGUAGE, "stopwords": "en", "bm25s": bm25s.__version__, "method": "lucene"}
        self.corpus, self.index_path, meta = open_index(corpus, index_dir=index_dir, suffix="bm25s",
                                                        params=params, build=self._build,
                                                        duplicate_ids=duplicate_ids)
        self.fingerprint = meta["key"]["fingerprint"]
        # mmap: a wiki-scale index is several GB; pages are read only as queries touch them.
        self._bm25 = bm25s.BM25.load(self.index_path, mmap=True, show_progress=False)
        self.counters = Counters(requests=0, queries=0, no_results=0, errors=0, latency_s=0.0)
        self._index_stats = {"index_built": meta["built_now"], "index_build_s": meta["build_s"],
                             "index_open_s": round(time.perf_counter() - t0, 3), "passages": len(self.corpus),
                             "duplicates_skipped": meta.get("duplicates_skipped", 0)}

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> BM25Engine:
        if not cfg.corpus:
            raise ValueError("the bm25 engine needs --corpus (a JSONL file of {id, title?, contents})")
        return cls(cfg.corpus, index_dir=cfg.index_dir, duplicate_ids=cfg.duplicate_ids)

    def _build(self, texts: list[str], folder: Path) -> None:
        tokens = bm25s.tokenize(texts, stopwords="en", stemmer=self._stemmer, show_progress=False)
        index = bm25s.BM25(method="lucene")
        index.index(tokens, show_progress=False)
        index.save(folder, show_progress=False)

    def identity(self) -> str:
        return f"bm25:{self.corpus.path.name}:{self.fingerprint}"

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        t0 = time.perf_counter()
        try:
            out = self._search(requests)
        except Exception:
            self.counters.add(errors=1)
            raise
        self.counters.add(requests=1, queries=len(requests), latency_s=time.perf_counter() - t0,
                          no_results=sum(not docs for docs in out))
        return out

    def _search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        with self._stemmer_lock:
            tokens = bm25s.tokenize([r.query for r in requests], stopwords="en", stemmer=self._stemmer,
                                    return_ids=False, show_progress=False)
        out: list[list[Document]] = []
        for req, toks in zip(requests, tokens):
            ids = self._bm25.get_tokens_ids([t for t in toks if t])
            if not ids or req.k < 1:  # empty, all stop-words, or no term in the corpus
                out.append([])
                continue
            scores = self._bm25.get_scores_from_ids(ids)
            # Our own top-k rather than bm25s.retrieve: numpy's argpartition is ~15x slower on arrays that
            # are mostly tied zeros, and a zero score (no query term in the passage) is filler anyway.
            hits = np.flatnonzero(scores > 0)
            if len(hits) > req.k:
                hits = hits[np.argpartition(scores[hits], -req.k)[-req.k:]]
            hits = hits[np.argsort(-scores[hits], kind="stable")]
            out.append([self.corpus.doc(int(d), source="bm25", score=float(scores[d])) for d in hits])
        return out

    def stats(self) -> dict[str, Any]:
        return {**self.counters.snapshot(), **self._index_stats}

    def close(self) -> None:
        self.corpus.close()
