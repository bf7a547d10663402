"""Client for Search-R1-compatible retrieval servers, and the retry loop shared with SerpAPI.

Protocol (Search-R1 `retrieval_server.py`): `POST {endpoint}/retrieve` with
`{"queries": [...], "topk": k, "return_scores": true}`, answered by
`{"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}`, one list per query.

Several endpoints are used round-robin, one batch a request; a failed attempt moves on to the next
endpoint after an exponential back-off, and after `retries` retries the batch fails with SearchError.
A server behind a bearer token (`zerosearch serve --token-env`) gets it from the environment variable
named by `endpoint_token_env`; it is sent in the Authorization header and scrubbed from every error.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from zerosearch.engines import Counters, SearchError
from zerosearch.engines.base import Document, SearchEngine, SearchRequest
from zerosearch.engines.config import EngineConfig
from zerosearch.engines.corpus import passage


def redactor(*secrets: str | None) -> Callable[[str], str]:
    """A function replacing every occurrence of the secrets with `***`, in any mix of encodings a URL or
    a log line may carry: raw, percent-encoded (either hex case, `/` kept or not) and `+` for space."""
    alternatives = []
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        parts = []
        for ch in secret:
            forms = [re.escape(ch)] + ["".join(f"%{b:02x}" for b in ch.encode())]
            if ch == " ":
                forms.append(r"\+")
            parts.append("(?:" + "|".join(forms) + ")")
        alternatives.append("".join(parts))
    if not alternatives:
        return str
    # IGNORECASE so that %2b matches as well as %2B; it also matches the raw letters in either case, which
    # can only hide more than the secret, never less.
    pattern = re.compile("|".join(alternatives), re.IGNORECASE)
    return lambda text: pattern.sub("***", text)


def token_from_env(env_name: str | None, what: str) -> str | None:
    """The secret in environment variable `env_name` (None: not configured); unset or empty is an error,
    never a silent request without it."""
    if not env_name:
        return None
    token = os.environ.get(env_name, "").strip()
    if not token:
        raise ValueError(f"{what}: the environment variable {env_name} is unset or empty")
    return token


class _Transient(Exception):
    """A failure worth retrying: connection error, timeout, HTTP 429 or 5xx; `after`: the server's Retry-After."""

    def __init__(self, message: str, after: float | None = None):
        super().__init__(message)
        self.after = after


MAX_BACKOFF_S = 30.0  # one wait never exceeds this: with retries=10, 2**9 * 0.5 s would be over 4 minutes


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header in its delta-seconds form (ours: `engines/server/limits.py`); None
    for a missing, HTTP-date or malformed one."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < float("inf") else None


def wait_s(attempt: int, backoff: float, after: float | None) -> float:
    """The pause after failed attempt `attempt`: the exponential back-off, or the server's Retry-After when it
    asks for longer, never more than MAX_BACKOFF_S."""
    return min(max(backoff * 2**attempt, after or 0.0), MAX_BACKOFF_S)


def request_json(client: httpx.Client, method: str, urls: Callable[[], str], *, retries: int, backoff: float,
                 counters: Counters, redact: Callable[[str], str] = str, **kwargs: Any) -> Any:
    """Send until a 2xx JSON answer, at most `retries + 1` attempts, each to the URL `urls()` gives.

    Sleeps `backoff * 2**i` seconds after failed attempt i, or longer where a 429/503 says Retry-After, at most
    MAX_BACKOFF_S (`wait_s`; counted in `counters` as `retries`). Client
    errors (4xx other than 429) and non-JSON answers are not retried. `redact` scrubs secrets from
    anything put in an error message.
    """
    last = ""
    for attempt in range(retries + 1):
        url = urls()
        try:
            try:
                resp = client.request(method, url, **kwargs)
            except httpx.TransportError as e:  # connect/read/write errors and timeouts
                raise _Transient(f"{type(e).__name__}: {e}") from None
            if resp.status_code == 429 or resp.status_code >= 500:
                raise _Transient(f"HTTP {resp.status_code}: {resp.text[:200]}", retry_after(resp.headers.get("retry-after")))
            if resp.status_code >= 400:
                raise SearchError(redact(f"{method} {url}: HTTP {resp.status_code}: {resp.text[:300]}"))
            try:
                return resp.json()
            except ValueError:
                raise SearchError(redact(f"{method} {url}: response is not JSON: {resp.text[:200]!r}")) from None
        except _Transient as e:
            last = redact(f"{url}: {e}")
            if attempt < retries:
                counters.add(retries=1)
                time.sleep(wait_s(attempt, backoff, e.after))
    raise SearchError(redact(f"search failed after {retries + 1} attempts; last error: {last}"))


class RoundRobin:
    """Endpoints in turn; `next(itertools.count())` is atomic under the GIL, so threads may share it."""

    def __init__(self, endpoints: list[str]):
        self.endpoints = endpoints
        self._turn = itertools.count()

    def __call__(self) -> str:
        return self.endpoints[next(self._turn) % len(self.endpoints)]


class HttpEngine(SearchEngine):
    name = "http"

    def __init__(self, endpoints: list[str], *, timeout: float = 30.0, retries: int = 3, backoff: float = 0.5,
                 token: str | None = None):
        if not endpoints:
            raise ValueError("the http engine needs --endpoint URL (several, comma-separated, are load-balanced)")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self._urls = RoundRobin([f"{e}/retrieve" for e in self.endpoints])
        self.retries, self.backoff = retries, backoff
        self._client = httpx.Client(timeout=timeout, headers={"Authorization": f"Bearer {token}"} if token else None)
        self._redact = redactor(token)
        self.counters = Counters(requests=0, queries=0, retries=0, errors=0, latency_s=0.0)

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> HttpEngine:
        return cls(cfg.endpoint, timeout=cfg.timeout, retries=cfg.retries, backoff=cfg.backoff,
                   token=token_from_env(cfg.endpoint_token_env, "--endpoint-token-env"))

    def identity(self) -> str:
        return "http:" + ",".join(sorted(self.endpoints))

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        out: list[list[Document]] = [[] for _ in requests]
        live = [i for i, r in enumerate(requests) if r.query.strip() and r.k > 0]  # others get no documents
        if not live:
            return out
        t0 = time.perf_counter()
        k = max(requests[i].k for i in live)
        try:
            body = request_json(self._client, "POST", self._urls, retries=self.retries, backoff=self.backoff,
                                counters=self.counters, redact=self._redact,
                                json={"queries": [requests[i].query for i in live], "topk": k, "return_scores": True})
            results = self._parse(body, len(live))
        except SearchError:
            self.counters.add(errors=1)
            raise
        finally:
            self.counters.add(requests=1, queries=len(live), latency_s=time.perf_counter() - t0)
        for i, docs in zip(live, results):
            out[i] = docs[: requests[i].k]
        return out

    @staticmethod
    def _parse(body: Any, n: int) -> list[list[Document]]:
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, list) or len(result) != n:
            raise SearchError(f"retrieval server answered without a 'result' list of {n} entries: {str(body)[:200]}")
        out = []
        for qi, hits in enumerate(result):
            if not isinstance(hits, list):
                raise SearchError(f"retrieval server: result[{qi}] is not a list")
            docs = []
            for hi, hit in enumerate(hits):
                # With return_scores the server wraps each document; without, it sends it bare.
                wrapped = isinstance(hit, dict) and "document" in hit
                try:
                    doc_id, title, text = passage(hit["document"] if wrapped else hit, f"result[{qi}][{hi}]")
                except ValueError as e:
                    raise SearchError(f"retrieval server: {e}") from None
                score = hit.get("score") if wrapped else None
                docs.append(Document(title=title, text=text, source="http", id=doc_id,
                                     score=float(score) if isinstance(score, (int, float)) else None))
            out.append(docs)
        return out

    def stats(self) -> dict[str, Any]:
        return self.counters.snapshot()

    def close(self) -> None:
        self._client.close()
