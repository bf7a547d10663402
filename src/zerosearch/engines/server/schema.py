"""The server's request and response models, and the OpenAPI document built from them.

The request models validate bodies (strict types, no coercion); the response models only document what
the routes write by hand, so the OpenAPI document (which the fuzzers test the server against) is complete.
Kept apart from the routes so the wire format can be read in one place.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


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


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: the error body and meaning of each status (with Retry-After on 503)."""
    out: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody, "description": _ERRORS[s]} for s in statuses}
    if 503 in out:
        out[503]["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}
    return out


def _constrain(prop: dict[str, Any], **limits: Any) -> None:
    """Add JSON Schema keywords to a property, or to the non-null branch of an optional one."""
    for branch in prop.get("anyOf", [prop]):
        if branch.get("type") != "null":
            branch.update(limits)


def openapi_document(app: FastAPI, *, max_queries: int, max_k: int, max_query_chars: int,
                     token: str | None) -> dict[str, Any]:
    """FastAPI's document from the models above, plus this server's limits and its auth."""
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
    return doc
