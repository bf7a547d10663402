"""Any `SearchEngine` over HTTP: `/search` (full requests), `/retrieve` (Search-R1), `/health`, `/metrics`.

    POST /search    {"requests": [{"query", "k"?, "row_id"?, "question"?, "golden_answers"?, "mode"?,
                                   "noise_prob"?}, ...]}
                    -> {"results": [[Document.to_dict(), ...], ...]}   one list per request
    POST /retrieve  {"queries": [...], "topk"?: int, "return_scores"?: bool}   (Search-R1 retrieval_server)
                    -> {"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]} with return_scores,
                       else {"result": [[{"id", "contents"}, ...], ...]}; contents is `"Title"\\ntext` as in
                       Search-R1 corpora; a document without a score (the simulator's) gets 0.0, one
                       without an id null
    GET  /health    {"status": "ok", "engine": identity}
    GET  /metrics   request/query/error counts, latency p50/p99/mean over the last requests, batching,
                    and the engine's own stats (cache hits and misses for a CachedEngine)

Bad bodies are 400 (not JSON) or 422 (missing or ill-typed fields, k above `max_k`, or a request the
engine refuses, e.g. a gold-aware simulator without question and answer); more than `max_queries` queries
in one request is 413; an engine failure is 502. Every error body is `{"detail": "<one clear line>"}`.

Engine calls never run on the event loop. By default each request calls `engine.search` in a worker
thread, concurrently (every engine here is thread-safe). The in-process simulator runs one `generate` at a
time, and a batch of prompts costs far less per prompt than prompts one by one (bench/engines.py), so for
it a `MicroBatcher` thread merges the queries of requests arriving within `batch_window_ms` (up to
`max_batch` queries) into one `engine.search` call; requests that arrive while that call runs form the
next batch, so under load batches grow by themselves and an idle server adds at most the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from zerosearch.engines import Counters
from zerosearch.engines.base import Document, SearchEngine, SearchRequest

DEFAULT_MAX_QUERIES = 256
DEFAULT_MAX_K = 100
DEFAULT_BATCH_WINDOW_MS = 10.0  # what `batch_window_ms=None` means for the simulator
LATENCY_WINDOW = 2048  # latency percentiles cover the last this many search requests


class SearchItem(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored

    query: str
    k: int | None = Field(None, ge=1)
    row_id: str | None = None
    question: str | None = None
    golden_answers: list[str] | None = None
    mode: Literal["useful", "noisy"] | None = None
    noise_prob: float | None = Field(None, ge=0, le=1)


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[SearchItem]


class RetrieveBody(BaseModel):
    """Search-R1's `QueryRequest`; unknown fields are ignored there, so here too."""

    queries: list[str]
    topk: int | None = Field(None, ge=1)
    return_scores: bool = False


class HTTPError(Exception):
    """Ends a request with `status` and `{"detail": message}`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _checked_search(engine: SearchEngine, requests: list[SearchRequest]) -> list[list[Document]]:
    results = engine.search(requests)
    if len(results) != len(requests):
        raise RuntimeError(f"engine returned {len(results)} result lists for {len(requests)} requests")
    return results


@dataclass
class _Job:
    requests: list[SearchRequest]
    future: Future[list[list[Document]]]


class MicroBatcher:
    """One thread that runs `engine.search` on the merged queries of requests that arrive together.

    A batch starts with the oldest waiting job and takes more for up to `window_s`, stopping early at
    `max_batch` queries (a job that would overflow the batch starts the next one; a job larger than
    `max_batch` runs alone). If the merged call raises ValueError, i.e. the engine refused some request's
    input, each job is retried on its own so one bad request fails only its own client; other errors are
    engine failures and fail the whole batch.
    """

    def __init__(self, engine: SearchEngine, *, window_s: float, max_batch: int):
        if window_s < 0 or max_batch < 1:
            raise ValueError(f"need batch window >= 0 and max_batch >= 1, got {window_s}, {max_batch}")
        self.engine, self.window_s, self.max_batch = engine, window_s, max_batch
        self.counters = Counters(engine_calls=0, batched_queries=0)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, requests: list[SearchRequest]) -> Future[list[list[Document]]]:
        job = _Job(requests, Future())
        with self._lock:
            # Started on demand, so the app keeps working after a lifespan shutdown closed it (TestClient).
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="zerosearch-batcher", daemon=True)
                self._thread.start()
            self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Finish the jobs already submitted, then stop the thread."""
        with self._lock:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join(timeout=60)
                self._thread = None

    def _run(self) -> None:
        carry: _Job | None = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is None:
                return
            batch, size, stop = [first], len(first.requests), False
            deadline = time.monotonic() + self.window_s
            while size < self.max_batch:
                remaining = deadline - time.monotonic()
                try:  # past the window, still take what queued up while the engine was busy
                    job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                if size + len(job.requests) > self.max_batch:
                    carry = job
                    break
                batch.append(job)
                size += len(job.requests)
            # A client that hung up has cancelled its future: leave its queries out.
            self._execute([j for j in batch if j.future.set_running_or_notify_cancel()])
            if stop:
                return

    def _execute(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        requests = [r for j in jobs for r in j.requests]
        try:
            self.counters.add(engine_calls=1, batched_queries=len(requests))
            results = _checked_search(self.engine, requests)
        except ValueError as e:
            if len(jobs) == 1:
                jobs[0].future.set_exception(e)
            else:
                for j in jobs:
                    self._execute([j])
            return
        except Exception as e:  # delivered to every waiting request, which answers 502
            for j in jobs:
                j.future.set_exception(e)
            return
        start = 0
        for j in jobs:
            j.future.set_result(results[start: start + len(j.requests)])
            start += len(j.requests)

    def stats(self) -> dict[str, Any]:
        c = self.counters.snapshot()
        return {**c, "mean_batch_queries": c["batched_queries"] / c["engine_calls"] if c["engine_calls"] else 0.0}


class _Metrics:
    def __init__(self) -> None:
        self.counters = Counters(requests=0, queries=0, errors=0, rejected=0)
        self._latency_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._lock = threading.Lock()
        self.started = time.monotonic()

    def observe(self, ms: float) -> None:
        with self._lock:
            self._latency_ms.append(ms)

    def latency(self) -> dict[str, Any]:
        with self._lock:
            xs = sorted(self._latency_ms)
        if not xs:
            return {"count": 0, "p50": None, "p99": None, "mean": None}

        def pct(p: float) -> float:  # nearest rank
            return round(xs[max(math.ceil(p * len(xs)) - 1, 0)], 3)

        return {"count": len(xs), "p50": pct(0.50), "p99": pct(0.99), "mean": round(sum(xs) / len(xs), 3)}


def _contents(d: Document) -> str:
    return f'"{d.title}"\n{d.text}' if d.title else d.text


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    """Pydantic's error list as one line: `requests.0.query: Field required; ...` (400 for broken JSON)."""
    parts, broken_json = [], False
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        if err.get("type") == "json_invalid":
            broken_json = True
            parts.append(f"body is not valid JSON ({err.get('ctx', {}).get('error', err.get('msg'))})")
        else:
            parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return (400 if broken_json else 422), "invalid request: " + "; ".join(parts)


def create_app(engine: SearchEngine, *, default_k: int = 5, max_queries: int = DEFAULT_MAX_QUERIES,
               max_k: int = DEFAULT_MAX_K, batch_window_ms: float | None = None, max_batch: int = 64) -> FastAPI:
    """The app serving `engine` (which stays the caller's to close).

    `batch_window_ms`: None batches for the simulator only (`DEFAULT_BATCH_WINDOW_MS`), 0 never batches,
    a positive value always batches with that window.
    """
    if not 1 <= default_k <= max_k or max_queries < 1:
        raise ValueError(f"need 1 <= default_k <= max_k and max_queries >= 1, got {default_k}, {max_k}, {max_queries}")
    if batch_window_ms is None:
        batch_window_ms = DEFAULT_BATCH_WINDOW_MS if engine.name == "simulated" else 0.0
    batcher = MicroBatcher(engine, window_s=batch_window_ms / 1000, max_batch=max_batch) if batch_window_ms > 0 \
        else None
    metrics = _Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if batcher is not None:
            batcher.close()

    app = FastAPI(title="zerosearch search engine", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.counters.add(rejected=1)
        status, message = _validation_message(exc)
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError) -> JSONResponse:
        metrics.counters.add(**{"errors" if exc.status >= 500 else "rejected": 1})
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    def check_bounds(n_queries: int, k: int) -> None:
        if n_queries > max_queries:
            raise HTTPError(413, f"too many queries in one request: {n_queries} > max_queries={max_queries}; "
                                 "split the batch")
        if k > max_k:
            raise HTTPError(422, f"k={k} is above this server's max_k={max_k}")

    async def run_search(requests: list[SearchRequest]) -> list[list[Document]]:
        t0 = time.perf_counter()
        metrics.counters.add(requests=1, queries=len(requests))
        try:
            if not requests:
                return []
            if batcher is not None:
                return await asyncio.wrap_future(batcher.submit(requests))
            return await run_in_threadpool(_checked_search, engine, requests)
        except ValueError as e:  # the engine refused the input (e.g. no question for a gold-aware simulator)
            raise HTTPError(422, f"invalid request: {e}") from None
        except Exception as e:
            raise HTTPError(502, f"search engine failed: {type(e).__name__}: {e}") from None
        finally:
            metrics.observe((time.perf_counter() - t0) * 1000)

    @app.post("/search")
    async def search(body: SearchBody) -> JSONResponse:
        check_bounds(len(body.requests), max((r.k or default_k for r in body.requests), default=default_k))
        requests = [SearchRequest(**{**r.model_dump(), "k": r.k or default_k}) for r in body.requests]
        results = await run_search(requests)
        return JSONResponse({"results": [[d.to_dict() for d in docs] for docs in results]})

    @app.post("/retrieve")
    async def retrieve(body: RetrieveBody) -> JSONResponse:
        k = body.topk or default_k
        check_bounds(len(body.queries), k)
        results = await run_search([SearchRequest(q, k=k) for q in body.queries])
        if body.return_scores:
            result: list[list[dict[str, Any]]] = [
                [{"document": {"id": d.id, "contents": _contents(d)}, "score": d.score if d.score is not None else 0.0}
                 for d in docs] for docs in results]
        else:
            result = [[{"id": d.id, "contents": _contents(d)} for d in docs] for docs in results]
        return JSONResponse({"result": result})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "engine": engine.identity()}

    @app.get("/metrics")
    async def get_metrics() -> JSONResponse:
        batching: dict[str, Any] = {"enabled": batcher is not None, "window_ms": batch_window_ms}
        if batcher is not None:
            batching.update(max_batch=max_batch, **batcher.stats())
        engine_stats = await run_in_threadpool(engine.stats)  # may take the engine's locks
        return JSONResponse({
            "uptime_s": round(time.monotonic() - metrics.started, 3), **metrics.counters.snapshot(),
            "latency_ms": metrics.latency(), "batching": batching, "limits": {"max_queries": max_queries,
                                                                             "max_k": max_k},
            "engine": engine.identity(), "engine_stats": engine_stats})

    return app


def _listen(host: str, port: int) -> socket.socket:
    """A bound listening socket (port 0: a free one), so the URL is known before uvicorn starts.

    Made with proto=IPPROTO_TCP, which `socket.create_server` leaves at 0: asyncio sets TCP_NODELAY only on
    connections whose socket says TCP, and without it every response after a connection's first waited
    ~40 ms (Nagle's algorithm against the client's delayed ACK).
    """
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         proto=socket.IPPROTO_TCP)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def _url(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(engine: SearchEngine, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "warning",
          on_ready: Callable[[str], None] | None = None, **app_options: Any) -> None:
    """Serve `engine` until interrupted (Ctrl-C / SIGTERM); `on_ready(url)` once the port is bound."""
    sock = _listen(host, port)
    app = create_app(engine, **app_options)
    if on_ready is not None:
        on_ready(_url(host, sock))
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False))
    server.run(sockets=[sock])


@contextlib.contextmanager
def serving(app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 10.0) -> Iterator[str]:
    """Run `app` with uvicorn in a background thread (tests, benchmarks); yields its URL, stops on exit."""
    sock = _listen(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="zerosearch-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {_url(host, sock)} did not start within {timeout} s")
            time.sleep(0.01)
        yield _url(host, sock)
    finally:
        server.should_exit = True
        thread.join(timeout=timeout)
        sock.close()
