"""The simulated search engine: an LLM writes the k documents a search engine would return.

For each `SearchRequest` the engine
1. decides useful or noisy: the request's explicit `mode`, else a draw with its `noise_prob` (the
   curriculum's p(step)) from the engine's seeded RNG, else useful;
2. renders the prompt with *that request's own* question and first gold answer (the reference code
   looked them up by position in a filtered list and could pair a query with another row's answer; here
   a request without its context is refused, never filled in from elsewhere);
3. generates all prompts of the call in one batch, parses each output into at most k `Document`s
   (source "simulated", meta: mode, row_id, parse repairs, leak flag) and counts what happened;
4. runs the leak guard (`sim_guard`, judging with `zerosearch.engines.leak`): a result that states a
   gold answer the query did not bring, in noisy mode or for a query that names none of the question's
   entities, is a candidate; the same query is generated again answer-blind in the same mode (the
   referee), and the candidate is cleared when that result states the answer too, else flagged. "flag"
   marks and counts flagged results; "replace" serves the referee's answer-blind result instead.
Answer-blind engines (`answer_blind=True`, for evaluation) never put a question or answer in a prompt and
report `sees_gold_answers = False`.

A query longer than `max_query_tokens` tokens (the in-process model's tokenizer), or than what the
model's context can hold beside the rest of the prompt and `max_new_tokens`, is cut to fit (counted in
`query_truncated`, marked `meta["query_truncated"]`): one pasted page must not hold the model for minutes.
The HTTP server also caps queries in characters (`max_query_chars`), which covers remote backends.

A request the backend gave up on (see `sim_backends`) gets one document, "No results found.", with
`meta["fallback"] = True` and the error: the policy sees what a search engine shows for a failed search,
and the trainer can find and drop such trajectories. Documents per request: `min(request.k, k)`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from dataclasses import fields, replace
from typing import Any

from zerosearch.engines import Counters
from zerosearch.engines.base import DocMode, Document, SearchEngine, SearchRequest
from zerosearch.engines.config import EngineConfig
from zerosearch.engines.http import token_from_env
from zerosearch.engines.leak import LeakGuard
from zerosearch.engines.noise import draw_mode
from zerosearch.engines.sim_backends import Generation, OpenAIBackend, SimBackend, TransformersBackend
from zerosearch.engines.sim_guard import SimResult, guard_results
from zerosearch.engines.sim_prompts import (
    SIM_FAMILIES,
    ParseInfo,
    SimFamily,
    parse_documents,
    prompt_answer,
    render_sim_prompt,
    stop_strings,
)

FALLBACK_TEXT = "No results found."
# The reply is started with the first marker: small un-tuned models then write the list instead of
# answering the question (SmolLM2-135M answered in one line without it), and a tuned simulator's targets
# start with it anyway.
REPLY_PREFIX = "Doc 1:"
LEAK_GUARDS = ("off", "flag", "replace")
# The config's default key variable is SerpAPI's; that key must never be sent to a simulator server.
_SERPAPI_KEY_ENV = "SERPAPI_API_KEY"


def _documents(gen: Generation, n: int, meta: dict[str, Any]) -> SimResult:
    """At most `n` documents parsed from `gen` (one "No results found." for a generation that failed)."""
    if gen.error is not None:
        return [Document(title="", text=FALLBACK_TEXT, source="simulated",
                         meta={**meta, "fallback": True, "error": gen.error})], gen, None
    parsed, info = parse_documents(gen.text, n)
    meta = {**meta, "repairs": info.repairs(), "truncated": gen.finish_reason == "length"}
    return [Document(title=d.title, text=d.text, source="simulated", meta=dict(meta)) for d in parsed], gen, info


class SimulatedEngine(SearchEngine):
    name = "simulated"

    def __init__(self, backend: SimBackend, *, k: int = 5, sim_mode: SimFamily = "prompt", answer_blind: bool = False,
                 doc_words: int = 30, leak_guard: str = "flag", seed: int = 0, guard: LeakGuard | None = None,
                 max_query_tokens: int = 128, leak_referee: bool = True):
        """`leak_referee=False` flags every candidate without the answer-blind second opinion ("replace"
        still generates the answer-blind replacement)."""
        if k < 1 or doc_words < 1 or max_query_tokens < 1:
            raise ValueError(f"k, doc_words and max_query_tokens must be >= 1, got k={k}, doc_words={doc_words}, "
                             f"max_query_tokens={max_query_tokens}")
        self.max_query_tokens = max_query_tokens
        if sim_mode not in SIM_FAMILIES:
            raise ValueError(f"sim_mode must be one of {SIM_FAMILIES}, got {sim_mode!r}")
        if leak_guard not in LEAK_GUARDS:
            raise ValueError(f"leak_guard must be one of {LEAK_GUARDS}, got {leak_guard!r}")
        self.backend = backend
        self.k, self.sim_mode, self.doc_words = k, sim_mode, doc_words
        self.answer_blind = answer_blind
        self.sees_gold_answers = not answer_blind
        # Nothing to guard when the simulator is never told the answer.
        self.leak_guard = "off" if answer_blind else leak_guard
        self.guard = guard or LeakGuard()
        self.leak_referee = leak_referee
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.counters = Counters(requests=0, queries=0, useful=0, noisy=0, drawn=0, docs=0, parse_repaired=0,
                                 truncated=0, query_truncated=0, empty_results=0, fallbacks=0, leak_suspicious=0,
                                 leak_referee=0, leak_cleared=0, leak_flagged=0, leak_docs=0, leak_replaced=0,
                                 search_seconds=0.0,
                                 **{f"parse_{f.name}": 0 for f in fields(ParseInfo)})

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> SimulatedEngine:
        backend: SimBackend
        if cfg.endpoint:
            key_env = "OPENAI_API_KEY" if cfg.api_key_env == _SERPAPI_KEY_ENV else cfg.api_key_env
            token = token_from_env(cfg.endpoint_token_env, "--endpoint-token-env")
            backend = OpenAIBackend(cfg.endpoint, cfg.model, timeout=cfg.timeout, retries=cfg.retries,
                                    backoff=cfg.backoff, api_key_env=key_env, token=token,
                                    max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                    seed=cfg.seed)
        else:
            backend = TransformersBackend(cfg.model, dtype=cfg.dtype, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
                                          temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
        return cls(backend, k=cfg.k, sim_mode=cfg.sim_mode, answer_blind=cfg.answer_blind, doc_words=cfg.doc_words,
                   leak_guard=cfg.leak_guard, seed=cfg.seed, max_query_tokens=cfg.max_query_tokens)

    def identity(self) -> str:
        context = "blind" if self.answer_blind else "gold"
        return (f"simulated:{self.backend.identity()}:family={self.sim_mode}:{context}:k={self.k}"
                f":words={self.doc_words}:leak={self.leak_guard}")

    # --- search ---------------------------------------------------------------------------------------

    def _context(self, i: int, r: SearchRequest) -> tuple[str | None, str | None]:
        """The question and answer for this request's prompt: its own, or none at all when answer-blind."""
        if self.answer_blind:
            return None, None
        question, answer = (r.question or "").strip(), prompt_answer(r.golden_answers)
        if not question or answer is None:
            raise ValueError(
                f"request {i} (row_id={r.row_id!r}, query={r.query!r}) has no question and gold answer, which the "
                "gold-aware simulator needs; pass them on every SearchRequest (never borrowed from another row) "
                "or use an answer-blind simulator")
        return question, answer

    def _clip_query(self, i: int, query: str, prompt_without_query: str) -> tuple[str, bool]:
        """`query` cut to `max_query_tokens` tokens and to the room the model's context leaves beside the
        rest of the prompt and the reply; unchanged for backends without a local tokenizer."""
        tokenizer = getattr(self.backend, "tokenizer", None)
        if tokenizer is None:
            return query, False
        budget = self.max_query_tokens
        config = getattr(getattr(self.backend, "model", None), "config", None)
        context = getattr(config, "max_position_embeddings", None)
        if isinstance(context, int):
            from zerosearch.prompts import render_prompt

            rest = len(tokenizer(render_prompt(prompt_without_query, tokenizer) + REPLY_PREFIX,
                                 add_special_tokens=False).input_ids)
            room = context - rest - int(getattr(self.backend, "max_new_tokens", 0))
            if room < 1:
                raise ValueError(f"request {i}: the simulator prompt alone ({rest} tokens) leaves no room for the "
                                 f"query in the model's {context}-token context; shorten the question")
            budget = min(budget, room)
        ids = tokenizer(query, add_special_tokens=False).input_ids
        if len(ids) <= budget:
            return query, False
        return tokenizer.decode(ids[:budget], skip_special_tokens=True), True

    def _mode(self, r: SearchRequest) -> tuple[DocMode, bool]:
        """(mode, drawn): the explicit mode, else a draw with noise_prob, else useful."""
        if r.mode is not None:
            if r.mode not in ("useful", "noisy"):
                raise ValueError(f"mode must be 'useful' or 'noisy', got {r.mode!r}")
            return r.mode, False
        if r.noise_prob is not None:
            with self._rng_lock:
                return draw_mode(r.noise_prob, self._rng), True
        return "useful", False

    def _generate(self, prompts: dict[int, tuple[str, int]]) -> dict[int, Generation]:
        """Generate {i: (prompt, n_docs)}; one backend call per n so every call can stop at 'Doc n+1'."""
        by_n: dict[int, list[int]] = {}
        for i, (_, n) in prompts.items():
            by_n.setdefault(n, []).append(i)
        out: dict[int, Generation] = {}
        for n, idx in sorted(by_n.items()):
            batch = [prompts[i][0] for i in idx]
            for i, g in zip(idx, self.backend.generate(batch, stop=stop_strings(n), prefix=REPLY_PREFIX)):
                out[i] = g
        return out

    def _count(self, docs: list[Document], gen: Generation, info: ParseInfo | None) -> None:
        """Count a result the policy is served (a referee's result only when it replaces one)."""
        if info is None:
            self.counters.add(fallbacks=1)
            return
        repairs = info.repairs()
        self.counters.add(docs=len(docs), truncated=int(gen.finish_reason == "length"),
                          empty_results=int(not docs), parse_repaired=int(bool(repairs)),
                          **{f"parse_{k}": v for k, v in repairs.items()})

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        t0 = time.perf_counter()
        out: list[list[Document]] = [[] for _ in requests]
        live = [i for i, r in enumerate(requests) if r.query.strip() and r.k > 0]  # others get no documents
        contexts = {i: self._context(i, requests[i]) for i in live}  # refuse the whole call before generating
        prompts: dict[int, tuple[str, int]] = {}
        modes: dict[int, DocMode] = {}
        requests = list(requests)  # the caller's list stays as it was; clipped queries replace ours
        clipped: set[int] = set()
        for i in live:
            r = requests[i]
            modes[i], drawn = self._mode(r)
            self.counters.add(**{modes[i]: 1}, drawn=int(drawn))
            n = min(r.k, self.k)
            question, answer = contexts[i]
            query, cut = self._clip_query(i, r.query, render_sim_prompt("", n, modes[i], question, answer,
                                                                        words=self.doc_words, family=self.sim_mode))
            if cut:
                requests[i] = replace(r, query=query)
                clipped.add(i)
            prompts[i] = (render_sim_prompt(query, n, modes[i], question, answer, words=self.doc_words,
                                            family=self.sim_mode), n)
        self.counters.add(query_truncated=len(clipped))
        gens = self._generate(prompts)
        results: dict[int, SimResult] = {}
        for i in live:
            meta: dict[str, Any] = {"mode": modes[i], "row_id": requests[i].row_id}
            if i in clipped:
                meta["query_truncated"] = True
            if self.leak_guard != "off":
                meta["leak"] = False
            results[i] = _documents(gens[i], prompts[i][1], meta)
        if self.leak_guard != "off":  # see `zerosearch.engines.sim_guard`
            guard_results(requests, results, modes, guard=self.guard, policy=self.leak_guard,
                          referee=self.leak_referee, counters=self.counters,
                          blind=lambda idx: self._referee(requests, modes, idx))
        for i, (docs, gen, info) in results.items():  # what is served (a replacement, not what it replaced)
            self._count(docs, gen, info)
            out[i] = docs
        self.counters.add(requests=1, queries=len(live), search_seconds=time.perf_counter() - t0)
        return out

    def _referee(self, requests: Sequence[SearchRequest], modes: dict[int, DocMode], idx: list[int]
                 ) -> dict[int, SimResult]:
        """The referee: the same queries, same modes, same model, no question and no answer in the prompt."""
        prompts = {i: (render_sim_prompt(requests[i].query, min(requests[i].k, self.k), modes[i],
                                         words=self.doc_words, family=self.sim_mode), min(requests[i].k, self.k))
                   for i in idx}
        self.counters.add(leak_referee=len(prompts))
        return {i: _documents(gen, prompts[i][1], {"mode": modes[i], "row_id": requests[i].row_id, "leak": False,
                                                    "answer_blind": True})
                for i, gen in self._generate(prompts).items()}

    # --- bookkeeping ----------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {**self.counters.snapshot(), **{f"backend_{k}": v for k, v in self.backend.stats().items()}}

    def state_dict(self) -> dict[str, Any]:
        """The mode-drawing RNG and the backend's seed counter, so a resumed run draws what it would have."""
        version, internal, gauss = self._rng.getstate()
        return {"rng": [version, list(internal), gauss], "backend": self.backend.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["rng"]
        with self._rng_lock:
            self._rng.setstate((version, tuple(internal), gauss))
        self.backend.load_state_dict(state["backend"])

    def close(self) -> None:
        self.backend.close()
