"""A drop-in for the `SearchTool` older veRL shipped (`verl.tools.search_tool.SearchTool`: added in
May 2025, in the v0.4.0-v0.7.0 releases, absent from the 0.8.0, 0.9.0 and 0.9.1 wheels), for users of veRL's generic `tool_agent` loop, backed by any
zerosearch engine, the simulator included.

Kept from the old tool: the config keys (`retrieval_service_url`, `topk`, `timeout`, `num_workers`,
`rate_limit`, `enable_global_rate_limit`), the `search(query_list)` schema, and the response: JSON
`{"result": ...}` with `Doc i (Title: t)\\ntext` blocks, one group per query joined by `\\n---\\n`.
`retrieval_service_url` alone means the Search-R1 `/retrieve` server it always meant (zerosearch's `http`
engine); an `engine:` mapping (EngineConfig fields) selects any zerosearch engine instead.

Each row's question, gold answers and id reach the tool through its create kwargs
(`extra_info.tools_kwargs.search.create_kwargs`, which `zerosearch export --format verl` writes), so the
simulator writes documents for *that* row. The noise probability is fixed (`noise_prob`, or per row in
the create kwargs): a tool never sees the training step; for the curriculum use the `zerosearch_agent`
loop.

Length: veRL cuts a tool response longer than `multi_turn.max_tool_response_length` characters (default
256) in the middle of a document. Five documents need about 1,000 characters; set that limit and
`max_response_chars` here to the same value, and the tool shortens every document evenly to fit, keeping
all k titles.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
from typing import Any
from uuid import uuid4

from zerosearch.engines.base import Document, SearchRequest
from zerosearch.integrations.verl.engine import shared_engine

from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

SCHEMA = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Searches the web for relevant information based on the given query.",
        "parameters": {
            "type": "object",
            "properties": {"query_list": {"type": "array", "items": {"type": "string"},
                                          "description": "A list of fully-formed semantic queries. The tool will "
                                                         "return search results for each query."}},
            "required": ["query_list"],
        },
    },
}


def _as_list(x: Any) -> list[str]:
    if x is None:
        return []
    if isinstance(x, dict):
        return _as_list(x.get("target"))
    if isinstance(x, str):
        return [x]
    return [str(a) for a in list(x)]


def _render(per_query: list[list[Document]], cap: int | None) -> str:
    groups = []
    for docs in per_query:
        blocks = []
        for i, d in enumerate(docs, start=1):
            text = d.text if cap is None or len(d.text) <= cap else d.text[: max(cap - 3, 0)] + "..."
            blocks.append(f"Doc {i} (Title: {d.title})\n{text}")
        groups.append("\n\n".join(blocks).strip())
    return "\n---\n".join(groups)


def _envelope(text: str) -> str:
    return json.dumps({"result": text}, ensure_ascii=False)


def render_results(per_query: list[list[Document]], max_chars: int | None = None) -> str:
    """The old tool's response: `{"result": ...}` with `_passages2string`'s blocks per query, joined by
    `\n---\n`. With `max_chars` (what veRL counts: the characters of this JSON string) every document's
    text is cut to one common length, the largest that fits, so all titles survive."""
    full = _envelope(_render(per_query, None))
    if max_chars is None or len(full) <= max_chars:
        return full
    lo, hi = 0, max((len(d.text) for docs in per_query for d in docs), default=0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if len(_envelope(_render(per_query, mid))) <= max_chars else (lo, mid - 1)
    return _envelope(_render(per_query, lo))


class ZeroSearchSearchTool(BaseTool):
    """`class_name: zerosearch.integrations.verl.tool.ZeroSearchSearchTool` in veRL's tool YAML."""

    def __init__(self, config: dict[str, Any], tool_schema: OpenAIFunctionToolSchema | None = None):
        super().__init__(config, tool_schema or OpenAIFunctionToolSchema.model_validate(SCHEMA))
        self.topk = int(config.get("topk", 3))  # the old tool's default
        self.timeout = float(config.get("timeout", config.get("default_timeout", 30)))
        self.num_workers = int(config.get("num_workers", 120))
        self.rate_limit = int(config.get("rate_limit", 120))
        # The old tool's limit was global through a Ray actor; this one holds per worker process.
        self.enable_global_rate_limit = bool(config.get("enable_global_rate_limit", True))
        self.noise_prob = config.get("noise_prob")
        mrc = config.get("max_response_chars")
        self.max_response_chars = None if mrc is None else int(mrc)
        engine = dict(config.get("engine") or {})
        if not engine:
            url = config.get("retrieval_service_url")
            if not url:
                raise ValueError("ZeroSearchSearchTool: set retrieval_service_url (a Search-R1 /retrieve server) "
                                 "or an engine: mapping of zerosearch EngineConfig fields")
            base = str(url).rstrip("/")
            base = base[: -len("/retrieve")] if base.endswith("/retrieve") else base
            engine = {"name": "http", "endpoint": [base], "timeout": self.timeout}
        engine.setdefault("k", self.topk)
        self.engine_settings = engine
        self._engine = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.num_workers,
                                                           thread_name_prefix="zerosearch-tool")
        self._limit = threading.BoundedSemaphore(self.rate_limit)
        self._instances: dict[str, dict[str, Any]] = {}

    @property
    def engine(self):
        if self._engine is None:
            self._engine = shared_engine(self.engine_settings)
        return self._engine

    async def create(self, instance_id: str | None = None, create_kwargs: dict[str, Any] | None = None,
                     **kwargs: Any) -> tuple[str, ToolResponse]:
        """veRL 0.9 passes the row's kwargs as `create_kwargs=`; older veRL spread them as keywords."""
        ctx = {**kwargs, **(create_kwargs or {})}
        instance_id = instance_id or str(uuid4())
        golds = _as_list(ctx.get("golden_answers")) or _as_list(ctx.get("ground_truth"))
        self._instances[instance_id] = {
            "question": ctx.get("question"), "golden_answers": golds or None,
            "row_id": None if ctx.get("id") is None else str(ctx.get("id")),
            "noise_prob": ctx.get("noise_prob", self.noise_prob), "queries": [], "documents": [],
        }
        return instance_id, ToolResponse()

    def _search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        with self._limit:
            return self.engine.search(requests)

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any) -> tuple[ToolResponse, float, dict]:
        queries = parameters.get("query_list")
        if not queries or not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
            return (ToolResponse(text=json.dumps({"result": "Error: 'query_list' is missing, empty, or not a list "
                                                             "of strings in parameters."})), 0.0, {})
        ctx = self._instances.get(instance_id) or {}
        requests = [SearchRequest(query=q, k=self.topk, row_id=ctx.get("row_id"), question=ctx.get("question"),
                                  golden_answers=ctx.get("golden_answers"), noise_prob=ctx.get("noise_prob"))
                    for q in queries]
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._pool, self._search, requests)
        except Exception as e:  # the old tool's contract: an error text, never an exception into the loop
            return ToolResponse(text=json.dumps({"result": f"Search execution failed: {e}"})), 0.0, {"error": str(e)}
        ctx.setdefault("queries", []).extend(queries)
        ctx.setdefault("documents", []).extend(results)
        total = sum(len(r) for r in results)
        status = "success" if total else "no_results"
        text = render_results(results, self.max_response_chars) if total else _envelope("No search results found.")
        metrics = {"query_count": len(queries), "status": status, "total_results": total,
                   "noisy_draws": sum(any(d.meta.get("mode") == "noisy" for d in r) for r in results)}
        return ToolResponse(text=text), 0.0, metrics

    async def calc_reward(self, instance_id: str, **kwargs: Any) -> float:
        return 0.0

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        self._instances.pop(instance_id, None)
