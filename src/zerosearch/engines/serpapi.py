"""Google results through SerpAPI: the real engine the paper evaluates with.

One `GET {endpoint}?q=...&api_key=...&num=k&engine=google` per query, the queries of a batch in
parallel. Documents are the answer box (when Google shows one) followed by the organic results
(`title`, `snippet`, `link`). The API key is read from the environment and never appears in
identity(), stats(), error messages or httpx's request log.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from zerosearch.engines import Counters, SearchError
from zerosearch.engines.base import Document, SearchEngine, SearchRequest
from zerosearch.engines.config import EngineConfig
from zerosearch.engines.http import RoundRobin, redactor, request_json

DEFAULT_ENDPOINT = "https://serpapi.com/search.json"


class _RedactKey(logging.Filter):
    """httpx logs every request URL at INFO, and SerpAPI takes the key in the URL (percent-encoded)."""

    def __init__(self, redact: Callable[[str], str]):
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = self.redact(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


class SerpApiEngine(SearchEngine):
    name = "serpapi"

    def __init__(self, *, api_key_env: str = "SERPAPI_API_KEY", endpoints: list[str] | None = None,
                 timeout: float = 30.0, retries: int = 3, backoff: float = 0.5, workers: int = 8):
        key = os.environ.get(api_key_env, "").strip()
        if not key:
            raise ValueError(f"the serpapi engine needs an API key in the environment variable {api_key_env} "
                             "(get one at https://serpapi.com/manage-api-key; --api-key-env names another variable)")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self._key = key
        self.endpoints = endpoints or [DEFAULT_ENDPOINT]
        self._urls = RoundRobin(self.endpoints)
        self.retries, self.backoff = retries, backoff
        self._client = httpx.Client(timeout=timeout)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="serpapi")
        # A key with `+ / =` travels percent-encoded in the URL: scrub every encoding, not only the raw one.
        self._redact = redactor(key)
        self._log_filter = _RedactKey(self._redact)
        logging.getLogger("httpx").addFilter(self._log_filter)
        self.counters = Counters(requests=0, queries=0, retries=0, errors=0, no_results=0, latency_s=0.0)

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> SerpApiEngine:
        return cls(api_key_env=cfg.api_key_env, endpoints=cfg.endpoint or None, timeout=cfg.timeout,
                   retries=cfg.retries, backoff=cfg.backoff)

    def identity(self) -> str:
        return "serpapi:google:" + ",".join(self.endpoints)

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        t0 = time.perf_counter()
        try:
            # SerpAPI has no batch call: one request per query, in parallel; list() re-raises the first error.
            out = list(self._pool.map(self._one, requests))
        finally:
            self.counters.add(requests=1, latency_s=time.perf_counter() - t0)
        return out

    def _one(self, req: SearchRequest) -> list[Document]:
        if not req.query.strip() or req.k < 1:
            return []
        try:
            body = request_json(self._client, "GET", self._urls, retries=self.retries, backoff=self.backoff,
                                counters=self.counters, redact=self._redact,
                                params={"q": req.query, "api_key": self._key, "num": req.k, "engine": "google"})
            docs = self._parse(body)
        except SearchError:
            self.counters.add(queries=1, errors=1)
            raise
        self.counters.add(queries=1, no_results=int(not docs))
        return docs[: req.k]

    def _parse(self, body: Any) -> list[Document]:
        if not isinstance(body, dict):
            raise SearchError(f"serpapi: expected a JSON object, got {type(body).__name__}")
        if body.get("error"):
            # Google finding nothing is reported as an error beside a "Success" status.
            if (body.get("search_metadata") or {}).get("status") == "Success":
                return []
            raise SearchError(self._redact(f"serpapi: {body['error']}"))
        docs = []
        box = body.get("answer_box")
        if isinstance(box, dict):
            text = box.get("answer") or box.get("result") or box.get("snippet")
            if isinstance(text, str) and text.strip():
                docs.append(Document(title=box.get("title") or "Answer box", text=text, source="serpapi",
                                     id=box.get("link"), meta={"type": "answer_box"}))
        for r in body.get("organic_results") or []:
            if isinstance(r, dict) and (r.get("title") or r.get("snippet")):
                docs.append(Document(title=r.get("title") or "", text=r.get("snippet") or "", source="serpapi",
                                     id=r.get("link"), meta={"type": "organic", "position": r.get("position")}))
        return docs

    def stats(self) -> dict[str, Any]:
        return self.counters.snapshot()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()
        logging.getLogger("httpx").removeFilter(self._log_filter)
