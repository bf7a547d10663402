"""The `self` engine (SSRL-style self-search): the policy being trained writes the documents for its own queries.

It is the answer-blind simulator with the simulator swapped for the policy: the same prompt family, the same
k-document parsing, the same useful/noisy draw, but the text comes from the *rollout's own* generation
backend, so it is always the policy's current weights and it is batched with nothing extra in memory.

    engine = build_engine(EngineConfig(name="self"))   # unbound: there is no policy yet
    bind_policy(engine, backend, tokenizer)            # the trainer / eval does this once it has built one

What reaches the policy is (query, k, row id, useful/noisy): `search` strips every request before anything
else sees it, so no question and no gold answer can get into a prompt, whatever the caller attached. The
documents go back through the rollout's `<information>` block, so their tokens get mask 0 like retrieved
text. docs/self-search.md says how this follows SSRL and where it differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zerosearch.engines.base import Document, SearchEngine, SearchRequest
from zerosearch.engines.config import EngineConfig
from zerosearch.engines.sim_backends import Generation
from zerosearch.engines.simulated import SimulatedEngine


class PolicyDocBackend:
    """A `SimBackend` over the rollout's `GenerationBackend`: chat-render and tokenize the simulator prompt,
    generate with the policy, decode. Sampling is seeded from (`seed`, call counter); the counter is saved
    with the engine so a resumed run draws what it would have."""

    name = "policy"

    def __init__(self, backend: Any, tokenizer: Any, *, max_new_tokens: int = 400, temperature: float = 1.0,
                 top_p: float = 1.0, seed: int = 0):
        if max_new_tokens < 1 or temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need max_new_tokens >= 1, temperature >= 0, 0 < top_p <= 1; got {max_new_tokens}, "
                             f"{temperature}, {top_p}")
        self.backend, self.tokenizer = backend, tokenizer
        self.max_new_tokens, self.temperature, self.top_p, self.seed = max_new_tokens, temperature, top_p, seed
        self._calls = 0
        self.prompts_seen: int = 0
        self.new_tokens: int = 0

    def identity(self) -> str:
        return f"policy:T={self.temperature}:top_p={self.top_p}:max={self.max_new_tokens}"

    def generate(self, prompts: Sequence[str], stop: Sequence[str] = (), prefix: str = "") -> list[Generation]:
        from zerosearch.prompts import render_prompt

        chat = getattr(self.tokenizer, "chat_template", None) is not None
        ids = [self.tokenizer(render_prompt(p, self.tokenizer) + prefix, add_special_tokens=not chat).input_ids
               for p in prompts]
        outs = self.backend.generate(ids, self.max_new_tokens, tuple(stop), self.temperature, self.top_p,
                                     self.seed * 1_000_003 + self._calls)
        self._calls += 1
        self.prompts_seen += len(prompts)
        gens = []
        for out in outs:
            self.new_tokens += len(out.token_ids)
            text = self.tokenizer.decode(out.token_ids, skip_special_tokens=True)
            cuts = [text.find(s) for s in stop if s in text]
            if cuts:  # drop the stop string itself, as the other simulator backends do
                text = text[: min(cuts)]
            gens.append(Generation(text=prefix + text, finish_reason="length" if out.stopped_by == "length" else "stop"))
        return gens

    def stats(self) -> dict[str, Any]:
        return {"prompts": self.prompts_seen, "calls": self._calls, "new_tokens": self.new_tokens}

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self._calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._calls = int(state["calls"])

    def close(self) -> None:
        pass


class UnboundPolicyError(ValueError):
    """The `self` engine was used where there is no policy (e.g. `zerosearch search --engine self`)."""


class _Unbound:
    """The backend of an engine built before its policy: any use says what is missing."""

    def identity(self) -> str:
        return "policy:unbound"

    def generate(self, *a: Any, **kw: Any) -> list[Generation]:
        raise UnboundPolicyError("the 'self' engine has no policy to write its documents: use it where a policy runs "
                                 "(train, eval, gap, ask), or in code call zerosearch.engines.self_search.bind_policy("
                                 "engine, generation_backend, tokenizer) first")

    def stats(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state

    def close(self) -> None:
        pass


def strip_request(r: SearchRequest) -> SearchRequest:
    """What the self engine may know of a request: the query, k, the row id and the useful/noisy setting."""
    return SearchRequest(query=r.query, k=r.k, row_id=r.row_id, mode=r.mode, noise_prob=r.noise_prob)


class SelfSearchEngine(SimulatedEngine):
    name = "self"

    def __init__(self, *, k: int = 5, doc_words: int = 30, sim_mode: str = "prompt", seed: int = 0,
                 max_new_tokens: int = 400, temperature: float = 1.0, top_p: float = 1.0):
        super().__init__(_Unbound(), k=k, sim_mode=sim_mode, answer_blind=True, doc_words=doc_words,  # type: ignore[arg-type]
                         leak_guard="off", seed=seed)
        self._gen = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed}

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> SelfSearchEngine:
        return cls(k=cfg.k, doc_words=cfg.doc_words, sim_mode=cfg.sim_mode, seed=cfg.seed,
                   max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)

    @property
    def bound(self) -> bool:
        return isinstance(self.backend, PolicyDocBackend)

    def bind(self, backend: Any, tokenizer: Any) -> None:
        pending = getattr(self.backend, "_pending", None)  # a checkpoint's counter restored before binding
        self.backend = PolicyDocBackend(backend, tokenizer, **self._gen)
        if pending:
            self.backend.load_state_dict(pending)

    @property
    def is_simulator(self) -> bool:
        return True

    def identity(self) -> str:
        return (f"self:{self.backend.identity()}:family={self.sim_mode}:k={self.k}:words={self.doc_words}"
                f":seed={self._gen['seed']}")

    def search(self, requests: list[SearchRequest]) -> list[list[Document]]:
        docs = super().search([strip_request(r) for r in requests])
        for ds in docs:
            for d in ds:
                d.source = "self"
        return docs


def bind_policy(engine: SearchEngine | None, backend: Any, tokenizer: Any) -> None:
    """Give a `self` engine (also one behind a wrapper with `.engine`) the policy's generation backend;
    any other engine is left alone, so callers bind whatever engine they were configured with."""
    while engine is not None and not isinstance(engine, SelfSearchEngine):
        engine = getattr(engine, "engine", None)
    if engine is not None:
        engine.bind(backend, tokenizer)
