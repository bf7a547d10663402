"""What the server refuses, and how: the bearer token, body and query caps, back-pressure, error bodies.

Every refusal is decided here, before the engine sees a request, so one place says which status and
`{"detail": ...}` line each bad input gets and which /metrics reason counts it.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from zerosearch.engines.server.metrics import Metrics, Window

DEFAULT_MAX_QUERIES = 256
DEFAULT_MAX_K = 100
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: 256 queries of 2,048 characters fit, a 100 MB paste does not
DEFAULT_MAX_QUERY_CHARS = 2048  # web queries are a few words; the policy writes at most a sentence or two
DEFAULT_MAX_PENDING = 2048  # requests admitted at once; above 1,000 so a burst of that many is all served
DEFAULT_SIM_MAX_PENDING = 256  # the simulator computes ~10 queries/s on a CPU: a longer queue only waits
ARRIVAL = "zerosearch.arrival"  # scope key: perf_counter() when the request reached the server


class HTTPError(Exception):
    """Ends a request with `status` and `{"detail": message}`; `reason` is its /metrics counter."""

    def __init__(self, status: int, message: str, *, reason: str = "invalid_request",
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.reason, self.headers = status, reason, headers


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


@dataclass(frozen=True)
class Bounds:
    """The per-request caps a parsed body must keep to: queries per request, k, characters per query."""

    max_queries: int
    max_k: int
    max_query_chars: int

    def check(self, n_queries: int, k: int, texts: list[tuple[str, str | None]],
              others: Sequence[tuple[str, str | None]] = ()) -> None:
        """Raise HTTPError for the first cap broken; `texts` are length-capped, `others` only Unicode-checked."""
        if n_queries > self.max_queries:
            raise HTTPError(413, f"too many queries in one request: {n_queries} > max_queries={self.max_queries}; "
                                 "split the batch", reason="too_many_queries")
        if k > self.max_k:
            raise HTTPError(422, f"k={k} is above this server's max_k={self.max_k}", reason="k_too_large")
        for where, text in texts:
            if text is not None and len(text) > self.max_query_chars:
                raise HTTPError(422, f"{where} has {len(text)} characters, above this server's "
                                     f"max_query_chars={self.max_query_chars}", reason="query_too_long")
        for where, text in [*texts, *others]:
            if text is not None and not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as e:
                    raise HTTPError(422, f"{where} is not valid Unicode: lone surrogate U+{ord(text[e.start]):04X} "
                                         f"at character {e.start}", reason="invalid_unicode") from None


class Admission:
    """Back-pressure: at most `max_pending` search requests admitted at once; one more is 503 + Retry-After.

    Only the event loop calls it, so `pending` needs no lock."""

    def __init__(self, max_pending: int, latency: Window):
        self.max_pending, self.latency = max_pending, latency
        self.pending = 0  # admitted search requests not yet answered

    def retry_after(self) -> str:
        mean = self.latency.summary()["mean"]  # ms; a request admitted now waits about this long again
        return str(min(60, max(1, math.ceil((mean or 1000) / 1000))))

    def enter(self) -> None:
        if self.pending >= self.max_pending:
            raise HTTPError(503, f"server busy: {self.pending} requests in progress "
                                 f"(max_pending={self.max_pending}); retry later",
                            headers={"Retry-After": self.retry_after()})
        self.pending += 1

    def leave(self) -> None:
        self.pending -= 1


def validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
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


def body_error(exc: BaseException | None) -> tuple[str, str]:
    """(reason, message) for a body FastAPI could not parse (it answers only "error parsing the body")."""
    if isinstance(exc, UnicodeDecodeError):
        return "not_utf8", f"body is not valid UTF-8 JSON (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
    if isinstance(exc, RecursionError):
        return "too_deep", "body is nested too deeply to parse"
    return "invalid_json", f"body could not be parsed ({type(exc).__name__})" if exc else "body could not be parsed"


class Guard:
    """Pure ASGI middleware in front of every route: stamps the arrival time, checks the bearer token and
    caps the body (Content-Length first, then the bytes as they stream in) before anything parses it."""

    def __init__(self, app: Any, *, token: str | None, max_body_bytes: int, metrics: Metrics):
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
                return await json_error(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                                        {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        too_big = json_error(413, f"request body is larger than this server's max_body_bytes={self.max_body_bytes}; "
                                  "split the batch or shorten the queries", {"Connection": "close"})
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                self.metrics.reject("invalid_json")
                return await json_error(400, "invalid Content-Length header")(scope, receive, send)
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
