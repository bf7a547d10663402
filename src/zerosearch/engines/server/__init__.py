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

The package, one concern a module: `app` (create_app: routes and error handlers), `limits` (auth, caps,
back-pressure, error bodies), `batcher` (worker pool, MicroBatcher), `schema` (request/response models,
OpenAPI), `metrics` (counters, latency windows), `runner` (serve, serving). Import from here.
"""

from __future__ import annotations

from zerosearch.engines.server.app import create_app
from zerosearch.engines.server.batcher import DEFAULT_BATCH_WINDOW_MS, DEFAULT_WORKERS, MicroBatcher
from zerosearch.engines.server.limits import (
    ARRIVAL,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_K,
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_QUERIES,
    DEFAULT_MAX_QUERY_CHARS,
    DEFAULT_SIM_MAX_PENDING,
    HTTPError,
)
from zerosearch.engines.server.metrics import LATENCY_WINDOW
from zerosearch.engines.server.runner import is_loopback, serve, serving
from zerosearch.engines.server.schema import (
    DocumentOut,
    ErrorBody,
    HealthResponse,
    Hit,
    MetricsResponse,
    PositiveInt,
    RetrieveBody,
    RetrieveResponse,
    ScoredHit,
    SearchBody,
    SearchItem,
    SearchResponse,
    Summary,
)

__all__ = [
    "ARRIVAL", "DEFAULT_BATCH_WINDOW_MS", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_K", "DEFAULT_MAX_PENDING",
    "DEFAULT_MAX_QUERIES", "DEFAULT_MAX_QUERY_CHARS", "DEFAULT_SIM_MAX_PENDING", "DEFAULT_WORKERS", "LATENCY_WINDOW",
    "DocumentOut", "ErrorBody", "HTTPError", "HealthResponse", "Hit", "MetricsResponse", "MicroBatcher",
    "PositiveInt", "RetrieveBody", "RetrieveResponse", "ScoredHit", "SearchBody", "SearchItem", "SearchResponse",
    "Summary", "create_app", "is_loopback", "serve", "serving",
]
