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
    GET  /metrics   request/query/error counts, rejections by reason, server latency, queue wait and
                    compute time p50/p99/mean over the last requests, batching, and the engine's own stats

Limits, all settings of `create_app` (and flags of `zerosearch serve`): a body above `max_body_bytes` is 413,
refused from its Content-Length before it is read, or as soon as the bytes streamed in pass the cap;
more than `max_queries` queries in one request is 413; a query or question longer than `max_query_chars`
characters, or k above `max_k`, is 422. Types are strict (`"topk": "3"` or `true` is 422, not coerced).
Bad bodies are 400 (not JSON, not UTF-8, nested too deeply) or 422 (missing or ill-typed fields, a request
the engine refuses, e.g. a gold-aware simulator without question and answer); an engine failure is 502.
Every error body is `{"detail": "<one clear line>"}` and every rejection is counted in /metrics.
A JSON number with an integral value (`"k": 3.0`) is the integer it equals, as JSON Schema's "integer"
says. A string holding a lone surrogate (`"\\udc00"`, which JSON's escapes allow but is no Unicode text)
is 422: nothing downstream could encode it, and an engine that echoes it (the simulator) made the
response unwritable (a 500).

`GET /openapi.json` is this app's OpenAPI document: the request models with this server's limits
(maxItems max_queries, maxLength max_query_chars, maximum max_k), every response body and status
(400, 401 with a token, 413, 422, 502, 503 + Retry-After), the bearer scheme when a token is set.
bench/fuzz.py and tests/test_fuzz_servers.py fuzz the server from it (Schemathesis).

With `token` set, every endpoint wants `Authorization: Bearer <token>` (401 otherwise), compared in constant
time; the token never appears in a response or a log line.

Backpressure: at most `max_pending` search requests are admitted at once (queued or computing); one more
is answered 503 with `Retry-After`. A request whose client disconnects while it waits is dropped: its
queries are never computed (a computation already running finishes, its result is discarded), counted as
`abandoned`. Queue wait (arrival to the start of its engine call) is reported apart from compute time.

Engine calls never run on the event loop. By default each request calls `engine.search` in a worker
thread (`workers` of them, every engine here is thread-safe). The in-process simulator runs one `generate`
at a time, and a batch of prompts costs far less per prompt than prompts one by one (bench/engines.py), so
for it a `MicroBatcher` thread merges the queries of requests arriving within `batch_window_ms` (up to
`max_batch` queries) into one `engine.search` call; requests that arrive while that call runs form the
next batch, so under load batches grow by themselves and an idle server adds at most the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import math
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from zerosearch.engines import Counters
from zerosearch.engines.base import Document, SearchEngine, SearchRequest

DEFAULT_MAX_QUERIES = 256
DEFAULT_MAX_K = 100
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: 256 queries of 2,048 characters fit, a 100 MB paste does not
DEFAULT_MAX_QUERY_CHARS = 2048  # web queries are a few words; the policy writes at most a sentence or two
DEFAULT_MAX_PENDING = 2048  # requests admitted at once; above 1,000 so a burst of that many is all served
DEFAULT_SIM_MAX_PENDING = 256  # the simulator computes ~10 queries/s on a CPU: a longer queue only waits
DEFAULT_WORKERS = 32
DEFAULT_BATCH_WINDOW_MS = 10.0  # what `batch_window_ms=None` means for the simulator
LATENCY_WINDOW = 2048  # latency percentiles cover the last this many search requests
ARRIVAL = "zerosearch.arrival"  # scope key: perf_counter() when the request reached the server


def _integral(value: Any) -> Any:
    """JSON has one number type: 3.0 is the integer 3 (JSON Schema's "integer"); 3.5, "3" and true stay errors."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Field before BeforeValidator: the other order documents the bound as "ge", which JSON Schema does not know
PositiveInt = Annotated[int, Field(ge=1), BeforeValidator(_integral)]


class SearchItem(BaseModel):
    # strict: "k": "3" or true is an error, not silently coerced; extra="forbid": a misspelt field is one too
    model_config = ConfigDict(extra="forbid", strict=True)

    query: str
    k: PositiveInt | None = None
    row_id: str | None = None
    question: str | None = None
    golden_answers: list[str] | None = None
    mode: Literal["useful", "noisy"] | None = None
    noise_prob: float | None = Field(None, ge=0, le=1)


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    requests: list[SearchItem]


class RetrieveBody(BaseModel):
    """Search-R1's `QueryRequest`; unknown fields are ignored there, so here too."""

    model_config = ConfigDict(strict=True)

    queries: list[str]
    topk: PositiveInt | None = None
    return_scores: bool = False


# --- response models: documentation only (the routes build their JSON directly; the fuzzer checks both agree)


class ErrorBody(BaseModel):
    detail: str = Field(description="one clear line saying what was wrong")


class DocumentOut(BaseModel):
    """`Document.to_dict()`."""

    title: str
    text: str
    source: str
    id: str | None
    score: float | None
    meta: dict[str, Any]


class SearchResponse(BaseModel):
    results: list[list[DocumentOut]] = Field(description="one list of documents per request, in rank order")


class Hit(BaseModel):
    id: str | None
    contents: str = Field(description='`"Title"\\ntext`, or the text alone when the document has no title')


class ScoredHit(BaseModel):
    document: Hit
    score: float


class RetrieveResponse(BaseModel):
    result: list[list[ScoredHit]] | list[list[Hit]] = Field(
        description="one list per query: scored hits with return_scores, else bare ones")


class HealthResponse(BaseModel):
    status: Literal["ok"]
    engine: str


class Summary(BaseModel):
    count: int
    p50: float | None
    p99: float | None
    mean: float | None


class MetricsResponse(BaseModel):
    uptime_s: float
    requests: int
    queries: int
    errors: int
    rejected: int
    overloaded: int
    abandoned: int
    rejected_by: dict[str, int]
    pending: int
    latency_ms: Summary
    queue_wait_ms: Summary
    compute_ms: Summary
    batching: dict[str, Any]
    limits: dict[str, Any]
    engine: str
    engine_stats: dict[str, Any]


_ERRORS = {
    400: "body not JSON, not UTF-8, nested too deeply, or a bad Content-Length",
    401: "missing or wrong bearer token",
    413: "body above max_body_bytes, or more than max_queries queries",
    422: "missing, ill-typed or out-of-range fields, a lone surrogate in a string, or a request the engine "
         "refuses (a gold-aware simulator needs question and golden_answers with every non-empty query)",
    502: "the search engine failed",
    503: "server busy (max_pending requests admitted); retry after Retry-After seconds",
}


def _error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody, "description": _ERRORS[s]} for s in statuses}
    if 503 in out:
        out[503]["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}
    return out


def _constrain(prop: dict[str, Any], **limits: Any) -> None:
    """Add JSON Schema keywords to a property, or to the non-null branch of an optional one."""
    for branch in prop.get("anyOf", [prop]):
        if branch.get("type") != "null":
            branch.update(limits)


class HTTPError(Exception):
    """Ends a request with `status` and `{"detail": message}`; `reason` is its /metrics counter."""

    def __init__(self, status: int, message: str, *, reason: str = "invalid_request",
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.reason, self.headers = status, reason, headers


def _checked_search(engine: SearchEngine, requests: list[SearchRequest]) -> list[list[Document]]:
    results = engine.search(requests)
    if len(results) != len(requests):
        raise RuntimeError(f"engine returned {len(results)} result lists for {len(requests)} requests")
    return results


@dataclass
class _Job:
    requests: list[SearchRequest]
    future: Future[list[list[Document]]]
    timing: dict[str, float] = field(default_factory=dict)  # "start"/"end" of its engine call (perf_counter)


class MicroBatcher:
    """One thread that runs `engine.search` on the merged queries of requests that arrive together.

    A batch starts with the oldest waiting job and takes more for up to `window_s`, stopping early at
    `max_batch` queries (a job that would overflow the batch starts the next one; a job larger than
    `max_batch` runs alone). A job whose future was cancelled (its client hung up) is left out when the
    batch closes. If the merged call raises ValueError, i.e. the engine refused some request's input,
    each job is retried on its own so one bad request fails only its own client; other errors are
    engine failures and fail the whole batch.
    """

    def __init__(self, engine: SearchEngine, *, window_s: float, max_batch: int):
        if not window_s >= 0 or max_batch < 1:
            raise ValueError(f"need batch window >= 0 and max_batch >= 1, got {window_s}, {max_batch}")
        self.engine, self.window_s, self.max_batch = engine, window_s, max_batch
        self.counters = Counters(engine_calls=0, batched_queries=0, dropped_jobs=0)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, requests: list[SearchRequest], timing: dict[str, float] | None = None
               ) -> Future[list[list[Document]]]:
        """Queue `requests`; `timing` (if given) gets the "start" and "end" of the engine call."""
        job = _Job(requests, Future(), timing if timing is not None else {})
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
            live = [j for j in batch if j.future.set_running_or_notify_cancel()]
            self.counters.add(dropped_jobs=len(batch) - len(live))
            self._execute(live)
            if stop:
                return

    def _execute(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        requests = [r for j in jobs for r in j.requests]
        start = time.perf_counter()
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
        end, first = time.perf_counter(), 0
        for j in jobs:
            j.timing.update(start=start, end=end)
            j.future.set_result(results[first: first + len(j.requests)])
            first += len(j.requests)

    def stats(self) -> dict[str, Any]:
        c = self.counters.snapshot()
        return {**c, "mean_batch_queries": c["batched_queries"] / c["engine_calls"] if c["engine_calls"] else 0.0}


class _Window:
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


class _Metrics:
    def __init__(self) -> None:
        # requests/queries: search requests that reached the engine stage; rejected: 4xx (by reason in
        # `reasons`); errors: 502; overloaded: 503; abandoned: client gone before its answer
        self.counters = Counters(requests=0, queries=0, errors=0, rejected=0, overloaded=0, abandoned=0)
        self.reasons = Counters()
        self.latency, self.queue_wait, self.compute = _Window(), _Window(), _Window()
        self.started = time.monotonic()

    def reject(self, reason: str) -> None:
        self.counters.add(rejected=1)
        self.reasons.add(**{reason: 1})


class _ClientGone(Exception):
    pass


async def _wait_for_disconnect(receive: Callable[[], Any]) -> None:
    # Once the body is read, the server's receive() returns only when the client has gone (or after the
    # response: the caller cancels this first).
    while (await receive())["type"] != "http.disconnect":
        pass


async def _unless_gone(request: Request, future: Future[Any]) -> Any:
    """`future`'s result, or _ClientGone (and `future` cancelled, so a queued job never runs) if the
    client disconnects first."""
    result = asyncio.wrap_future(future)
    gone = asyncio.ensure_future(_wait_for_disconnect(request.receive))
    try:
        await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
        if result.done():
            return result.result()
        result.cancel()  # cancels `future` too when it is still queued; a running one is ignored
        raise _ClientGone
    finally:
        gone.cancel()


def _contents(d: Document) -> str:
    return f'"{d.title}"\n{d.text}' if d.title else d.text


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    """Pydantic's error list as one line: `requests.0.query: Field required; ...` (400 for broken JSON)."""
    parts, broken_json = [], False
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        if err.get("type") == "json_invalid":
            broken_json = True
            parts.append(f"body is not valid JSON ({err.get('ctx', {}).get('error', err.get('msg'))})")
        else:
            parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return (400 if broken_json else 422), "invalid request: " + "; ".join(parts), \
        ("invalid_json" if broken_json else "invalid_fields")


def _body_error(exc: BaseException | None) -> tuple[str, str]:
    """(reason, message) for a body FastAPI could not parse (it answers only "error parsing the body")."""
    if isinstance(exc, UnicodeDecodeError):
        return "not_utf8", f"body is not valid UTF-8 JSON (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
    if isinstance(exc, RecursionError):
        return "too_deep", "body is nested too deeply to parse"
    return "invalid_json", f"body could not be parsed ({type(exc).__name__})" if exc else "body could not be parsed"


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


class _Guard:
    """Pure ASGI middleware in front of every route: stamps the arrival time, checks the bearer token and
    caps the body (Content-Length first, then the bytes as they stream in) before anything parses it."""

    def __init__(self, app: Any, *, token: str | None, max_body_bytes: int, metrics: _Metrics):
        self.app, self.max_body_bytes, self.metrics = app, max_body_bytes, metrics
        self._expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope[ARRIVAL] = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        if self._expected is not None:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):  # constant time; never echoed
                self.metrics.reject("unauthorized")
                return await _json_error(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                                         {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        too_big = _json_error(413, f"request body is larger than this server's max_body_bytes={self.max_body_bytes}; "
                                   "split the batch or shorten the queries", {"Connection": "close"})
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                self.metrics.reject("invalid_json")
                return await _json_error(400, "invalid Content-Length header")(scope, receive, send)
            if int(length) > self.max_body_bytes:
                self.metrics.reject("body_too_large")
                return await too_big(scope, receive, send)
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:  # chunked bodies have no Content-Length: count the bytes as they arrive
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending it all
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                self.metrics.reject("body_too_large")
                return await too_big(scope, receive, send)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # then the server's own: http.disconnect when the client leaves

        await self.app(scope, replay, send)


class _Pool:
    """A thread pool created on demand and closed with the app's lifespan (as MicroBatcher)."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="zerosearch-search")
            return self._pool.submit(fn, *args)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None


def create_app(engine: SearchEngine, *, default_k: int = 5, max_queries: int = DEFAULT_MAX_QUERIES,
               max_k: int = DEFAULT_MAX_K, batch_window_ms: float | None = None, max_batch: int = 64,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
               max_pending: int | None = None, workers: int = DEFAULT_WORKERS, token: str | None = None) -> FastAPI:
    """The app serving `engine` (which stays the caller's to close).

    `batch_window_ms`: None batches for the simulator only (`DEFAULT_BATCH_WINDOW_MS`), 0 never batches,
    a positive value always batches with that window. `max_pending`: None is `DEFAULT_SIM_MAX_PENDING` for
    the simulator, `DEFAULT_MAX_PENDING` otherwise. `token`: required bearer token (None: no auth).
    """
    simulator = engine.name == "simulated"
    if batch_window_ms is None:
        batch_window_ms = DEFAULT_BATCH_WINDOW_MS if simulator else 0.0
    if max_pending is None:
        max_pending = DEFAULT_SIM_MAX_PENDING if simulator else DEFAULT_MAX_PENDING
    problems = [f"{name} must be >= {low}, got {value}" for name, value, low in (
        ("default_k", default_k, 1), ("max_k", max_k, default_k), ("max_queries", max_queries, 1),
        ("max_batch", max_batch, 1), ("max_body_bytes", max_body_bytes, 1), ("max_query_chars", max_query_chars, 1),
        ("max_pending", max_pending, 1), ("workers", workers, 1), ("batch_window_ms", batch_window_ms, 0))
        if not value >= low]  # `not >=`: NaN fails too
    if problems:
        raise ValueError("; ".join(problems))
    if token is not None and not token.strip():
        raise ValueError("the bearer token is empty")
    batcher = MicroBatcher(engine, window_s=batch_window_ms / 1000, max_batch=max_batch) if batch_window_ms > 0 \
        else None
    pool = _Pool(workers)
    metrics = _Metrics()
    pending = 0  # admitted search requests not yet answered; only the event loop touches it

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if batcher is not None:
            batcher.close()
        pool.close()

    app = FastAPI(title="zerosearch search engine", lifespan=lifespan)
    app.add_middleware(_Guard, token=token, max_body_bytes=max_body_bytes, metrics=metrics)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, reason = _validation_message(exc)
        metrics.reject(reason)
        return _json_error(status, message)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own: 404/405, and 400 for a body it could not parse (not UTF-8, nested too deeply)
        if exc.status_code == 400:
            reason, message = _body_error(exc.__cause__)
        else:
            reason, message = f"http_{exc.status_code}", str(exc.detail)
        metrics.reject(reason)
        return _json_error(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError) -> JSONResponse:
        if exc.status == 503:
            metrics.counters.add(overloaded=1)
        elif exc.status >= 500:
            metrics.counters.add(errors=1)
        else:
            metrics.reject(exc.reason)
        return _json_error(exc.status, str(exc), exc.headers)

    def check_bounds(n_queries: int, k: int, texts: list[tuple[str, str | None]],
                     others: list[tuple[str, str | None]] = ()) -> None:
        if n_queries > max_queries:
            raise HTTPError(413, f"too many queries in one request: {n_queries} > max_queries={max_queries}; "
                                 "split the batch", reason="too_many_queries")
        if k > max_k:
            raise HTTPError(422, f"k={k} is above this server's max_k={max_k}", reason="k_too_large")
        for where, text in texts:
            if text is not None and len(text) > max_query_chars:
                raise HTTPError(422, f"{where} has {len(text)} characters, above this server's "
                                     f"max_query_chars={max_query_chars}", reason="query_too_long")
        for where, text in [*texts, *others]:
            if text is not None and not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as e:
                    raise HTTPError(422, f"{where} is not valid Unicode: lone surrogate U+{ord(text[e.start]):04X} "
                                         f"at character {e.start}", reason="invalid_unicode") from None

    def timed_search(requests: list[SearchRequest], timing: dict[str, float]) -> list[list[Document]]:
        timing["start"] = time.perf_counter()
        try:
            return _checked_search(engine, requests)
        finally:
            timing["end"] = time.perf_counter()

    def retry_after() -> str:
        mean = metrics.latency.summary()["mean"]  # ms; a request admitted now waits about this long again
        return str(min(60, max(1, math.ceil((mean or 1000) / 1000))))

    async def run_search(request: Request, requests: list[SearchRequest]) -> list[list[Document]] | None:
        """The results, or None when the client disconnected before they were ready."""
        nonlocal pending
        arrival = request.scope.get(ARRIVAL, time.perf_counter())
        if not requests:
            metrics.counters.add(requests=1)
            metrics.latency.observe((time.perf_counter() - arrival) * 1000)
            return []
        if pending >= max_pending:
            raise HTTPError(503, f"server busy: {pending} requests in progress (max_pending={max_pending}); "
                                 "retry later", headers={"Retry-After": retry_after()})
        metrics.counters.add(requests=1, queries=len(requests))
        pending += 1
        timing: dict[str, float] = {}
        try:
            future = batcher.submit(requests, timing) if batcher is not None else pool.submit(timed_search, requests,
                                                                                                 timing)
            return await _unless_gone(request, future)
        except _ClientGone:
            metrics.counters.add(abandoned=1)
            return None
        except ValueError as e:  # the engine refused the input (e.g. no question for a gold-aware simulator)
            raise HTTPError(422, f"invalid request: {e}", reason="engine_refused") from None
        except Exception as e:
            raise HTTPError(502, f"search engine failed: {type(e).__name__}: {e}") from None
        finally:
            pending -= 1
            now = time.perf_counter()
            metrics.latency.observe((now - arrival) * 1000)
            if "start" in timing:
                metrics.queue_wait.observe((timing["start"] - arrival) * 1000)
                metrics.compute.observe((timing.get("end", now) - timing["start"]) * 1000)

    # the middleware's answers (every route), then the search routes' own; 499 is never read, so not listed
    guard_errors = (400, 401, 413) if token is not None else (400, 413)
    errors = (*guard_errors, 422, 502, 503)

    # 499: nginx's "client closed request"; nobody reads it, but the access log and tests can tell
    gone = Response(status_code=499)

    @app.post("/search", response_model=SearchResponse, responses=_error_responses(*errors))
    async def search(body: SearchBody, request: Request) -> Response:
        check_bounds(len(body.requests), max((r.k or default_k for r in body.requests), default=default_k),
                     [(f"requests.{i}.{name}", getattr(r, name)) for i, r in enumerate(body.requests)
                      for name in ("query", "question")],
                     [(f"requests.{i}.row_id", r.row_id) for i, r in enumerate(body.requests)]
                     + [(f"requests.{i}.golden_answers.{j}", a) for i, r in enumerate(body.requests)
                        for j, a in enumerate(r.golden_answers or ())])
        requests = [SearchRequest(**{**r.model_dump(), "k": r.k or default_k}) for r in body.requests]
        results = await run_search(request, requests)
        if results is None:
            return gone
        return JSONResponse({"results": [[d.to_dict() for d in docs] for docs in results]})

    @app.post("/retrieve", response_model=RetrieveResponse, responses=_error_responses(*errors))
    async def retrieve(body: RetrieveBody, request: Request) -> Response:
        k = body.topk or default_k
        check_bounds(len(body.queries), k, [(f"queries.{i}", q) for i, q in enumerate(body.queries)])
        results = await run_search(request, [SearchRequest(q, k=k) for q in body.queries])
        if results is None:
            return gone
        if body.return_scores:
            result: list[list[dict[str, Any]]] = [
                [{"document": {"id": d.id, "contents": _contents(d)}, "score": d.score if d.score is not None else 0.0}
                 for d in docs] for docs in results]
        else:
            result = [[{"id": d.id, "contents": _contents(d)} for d in docs] for docs in results]
        return JSONResponse({"result": result})

    @app.get("/health", response_model=HealthResponse, responses=_error_responses(*guard_errors))
    async def health() -> dict[str, Any]:
        return {"status": "ok", "engine": engine.identity()}

    @app.get("/metrics", response_model=MetricsResponse, responses=_error_responses(*guard_errors))
    async def get_metrics() -> JSONResponse:
        batching: dict[str, Any] = {"enabled": batcher is not None, "window_ms": batch_window_ms}
        if batcher is not None:
            batching.update(max_batch=max_batch, **batcher.stats())
        engine_stats = await asyncio.to_thread(engine.stats)  # may take the engine's locks
        return JSONResponse({
            "uptime_s": round(time.monotonic() - metrics.started, 3), **metrics.counters.snapshot(),
            "rejected_by": metrics.reasons.snapshot(), "pending": pending,
            "latency_ms": metrics.latency.summary(), "queue_wait_ms": metrics.queue_wait.summary(),
            "compute_ms": metrics.compute.summary(), "batching": batching,
            "limits": {"max_queries": max_queries, "max_k": max_k, "max_body_bytes": max_body_bytes,
                       "max_query_chars": max_query_chars, "max_pending": max_pending, "workers": workers,
                       "auth": token is not None},
            "engine": engine.identity(), "engine_stats": engine_stats})

    def openapi() -> dict[str, Any]:
        """FastAPI's document from the models above, plus this server's limits and its auth."""
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                              description="zerosearch search engine server; see zerosearch.engines.server")
            schemas = doc["components"]["schemas"]
            item, search_body, retrieve_body = (schemas[n]["properties"] for n in ("SearchItem", "SearchBody",
                                                                                   "RetrieveBody"))
            _constrain(search_body["requests"], maxItems=max_queries)
            _constrain(retrieve_body["queries"], maxItems=max_queries)
            _constrain(retrieve_body["queries"]["items"], maxLength=max_query_chars)
            _constrain(item["query"], maxLength=max_query_chars)
            _constrain(item["question"], maxLength=max_query_chars)
            _constrain(item["k"], maximum=max_k)
            _constrain(retrieve_body["topk"], maximum=max_k)
            if token is not None:
                doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                doc["security"] = [{"bearer": []}]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def is_loopback(host: str) -> bool:
    """True when every address `host` resolves to is a loopback one (127.0.0.0/8, ::1)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


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
          on_ready: Callable[[str], None] | None = None, insecure: bool = False, **app_options: Any) -> None:
    """Serve `engine` until interrupted (Ctrl-C / SIGTERM); `on_ready(url)` once the port is bound.

    A host other machines can reach needs `token=...` (see create_app), or `insecure=True`."""
    if not is_loopback(host) and not app_options.get("token") and not insecure:
        raise ValueError(f"host {host!r} is reachable from other machines: serve it with a bearer token, or pass "
                         "insecure=True")
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
