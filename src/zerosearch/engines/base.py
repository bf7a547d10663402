"""The one interface every search engine implements, real or simulated.

Training, collection and evaluation talk to engines only through `SearchEngine.search`, so switching
from BM25 to the simulator (or to a remote server) is a matter of configuration.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

DocMode = Literal["useful", "noisy"]


@dataclass
class Document:
    title: str
    text: str
    source: str  # engine that produced it: "bm25", "dense", "http", "serpapi", "simulated", ...
    id: str | None = None
    score: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Document:
        return cls(**{k: d[k] for k in ("title", "text", "source", "id", "score", "meta") if k in d})


@dataclass
class SearchRequest:
    """One query. Real engines use `query` and `k`; simulators also read the context fields.

    `row_id` is the id of the QA row (trajectory) that asked: it travels with every query so the
    simulator always sees *this* row's question and gold answers (the reference code mixed them up).
    """

    query: str
    k: int = 5
    row_id: str | None = None
    question: str | None = None
    golden_answers: list[str] | None = None
    mode: DocMode | None = None  # explicit useful/noisy choice ...
    noise_prob: float | None = None  # ... or the probability of drawing "noisy" (curriculum)


class SearchEngine(abc.ABC):
    """Batched search. Subclasses set `name` and implement `search` (and `identity` if configurable, and
    `from_config` if they take settings); `engines.config.ENGINES` registers them by name."""

    name: str = "engine"
    #: True when the engine reads gold answers (a non-answer-blind simulator). Evaluation refuses these.
    sees_gold_answers: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> SearchEngine:
        """What `build_engine` calls with the `EngineConfig`; an engine with settings reads them here."""
        return cls()

    @abc.abstractmethod
    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        """Return, for each request, up to `request.k` documents, in rank order."""

    @property
    def is_simulator(self) -> bool:
        """An LLM writing the documents (answer-blind or not): never a stand-in for a real engine."""
        return self.sees_gold_answers or self.name == "simulated"

    def identity(self) -> str:
        """A string that changes whenever results could change (used as the cache key prefix)."""
        return self.name

    def stats(self) -> dict[str, Any]:
        """Counters for metrics (requests, errors, cache hits, parse failures, ...)."""
        return {}

    def close(self) -> None:
        pass

    def __enter__(self) -> SearchEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def format_documents(docs: list[Document]) -> str:
    """The text the policy sees between <information> tags: `Doc 1(Title: t) text` lines (Search-R1)."""
    lines = []
    for i, d in enumerate(docs, start=1):
        lines.append(f"Doc {i}(Title: {d.title}) {d.text}" if d.title else f"Doc {i}: {d.text}")
    return "\n".join(lines)
