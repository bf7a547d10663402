"""`create_app`: the FastAPI app, its routes (/search, /retrieve, /health, /metrics) and error handlers.

The routes only translate between the wire format (`schema`) and `SearchRequest`s; what is refused lives
in `limits`, where engine calls run in `batcher`, so a handler reads as the request's path end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from zerosearch.engines.base import Document, SearchEngine, SearchRequest
from zerosearch.engines.server.batcher import (
    DEFAULT_BATCH_WINDOW_MS,
    DEFAULT_WORKERS,
    MicroBatcher,
    Pool,
    checked_search,
)
from zerosearch.engines.server.limits import (
    ARRIVAL,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_K,
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_QUERIES,
    DEFAULT_MAX_QUERY_CHARS,
    DEFAULT_SIM_MAX_PENDING,
    Admission,
    Bounds,
    Guard,
    HTTPError,
    body_error,
    json_error,
    validation_message,
)
from zerosearch.engines.server.metrics import Metrics
from zerosearch.engines.server.schema import (
    HealthResponse,
    MetricsResponse,
    RetrieveBody,
    RetrieveResponse,
    SearchBody,
    SearchResponse,
    error_responses,
    openapi_document,
)


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
    pool = Pool(workers)
    metrics = Metrics()
    bounds = Bounds(max_queries=max_queries, max_k=max_k, max_query_chars=max_query_chars)
    admission = Admission(max_pending, metrics.latency)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if batcher is not None:
            batcher.close()
        pool.close()

    app = FastAPI(title="zerosearch search engine", lifespan=lifespan)
    app.add_middleware(Guard, token=token, max_body_bytes=max_body_bytes, metrics=metrics)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, reason = validation_message(exc)
        metrics.reject(reason)
        return json_error(status, message)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own: 404/405, and 400 for a body it could not parse (not UTF-8, nested too deeply)
        if exc.status_code == 400:
            reason, message = body_error(exc.__cause__)
        else:
            reason, message = f"http_{exc.status_code}", str(exc.detail)
        metrics.reject(reason)
        return json_error(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError) -> JSONResponse:
        if exc.status == 503:
            metrics.counters.add(overloaded=1)
        elif exc.status >= 500:
            metrics.counters.add(errors=1)
        else:
            metrics.reject(exc.reason)
        return json_error(exc.status, str(exc), exc.headers)

    def timed_search(requests: list[SearchRequest], timing: dict[str, float]) -> list[list[Document]]:
        timing["start"] = time.perf_counter()
        try:
            return checked_search(engine, requests)
        finally:
            timing["end"] = time.perf_counter()

    async def run_search(request: Request, requests: list[SearchRequest]) -> list[list[Document]] | None:
        """The results, or None when the client disconnected before they were ready."""
        arrival = request.scope.get(ARRIVAL, time.perf_counter())
        if not requests:
            metrics.counters.add(requests=1)
            metrics.latency.observe((time.perf_counter() - arrival) * 1000)
            return []
        admission.enter()  # 503 when max_pending requests are in already
        metrics.counters.add(requests=1, queries=len(requests))
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
            admission.leave()
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

    @app.post("/search", response_model=SearchResponse, responses=error_responses(*errors))
    async def search(body: SearchBody, request: Request) -> Response:
        bounds.check(len(body.requests), max((r.k or default_k for r in body.requests), default=default_k),
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

    @app.post("/retrieve", response_model=RetrieveResponse, responses=error_responses(*errors))
    async def retrieve(body: RetrieveBody, request: Request) -> Response:
        k = body.topk or default_k
        bounds.check(len(body.queries), k, [(f"queries.{i}", q) for i, q in enumerate(body.queries)])
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

    @app.get("/health", response_model=HealthResponse, responses=error_responses(*guard_errors))
    async def health() -> dict[str, Any]:
        return {"status": "ok", "engine": engine.identity()}

    @app.get("/metrics", response_model=MetricsResponse, responses=error_responses(*guard_errors))
    async def get_metrics() -> JSONResponse:
        batching: dict[str, Any] = {"enabled": batcher is not None, "window_ms": batch_window_ms}
        if batcher is not None:
            batching.update(max_batch=max_batch, **batcher.stats())
        engine_stats = await asyncio.to_thread(engine.stats)  # may take the engine's locks
        return JSONResponse({
            "uptime_s": round(time.monotonic() - metrics.started, 3), **metrics.counters.snapshot(),
            "rejected_by": metrics.reasons.snapshot(), "pending": admission.pending,
            "latency_ms": metrics.latency.summary(), "queue_wait_ms": metrics.queue_wait.summary(),
            "compute_ms": metrics.compute.summary(), "batching": batching,
            "limits": {"max_queries": max_queries, "max_k": max_k, "max_body_bytes": max_body_bytes,
                       "max_query_chars": max_query_chars, "max_pending": max_pending, "workers": workers,
                       "auth": token is not None},
            "engine": engine.identity(), "engine_stats": engine_stats})

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app, max_queries=max_queries, max_k=max_k,
                                                  max_query_chars=max_query_chars, token=token)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
