"""Engine configuration: one dataclass, the same CLI flags on every command, or a YAML file.

Every command that talks to an engine (`search`, `serve`, `eval`, `ask`, `warmup`, `collect`,
`judge-simulator`) calls `add_engine_arguments(parser)` and `EngineConfig.from_args(args)`, so an engine is
chosen the same way everywhere: `--engine bm25 --corpus corpus.jsonl`, `--engine simulated --sim-mode sft
--model DIR`, or `--engine-config engine.yaml` (flags given on the command line override the file).
`zerosearch train` reads the same fields from the `engine:` section of its YAML config.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# The engine registry: name -> "module:Class", each a SearchEngine with `from_config(cfg)`. A new engine is one
# line here; modules are imported only when their engine is built.
ENGINES = {
    "bm25": "zerosearch.engines.bm25:BM25Engine",
    "dense": "zerosearch.engines.dense:DenseEngine",
    "http": "zerosearch.engines.http:HttpEngine",
    "serpapi": "zerosearch.engines.serpapi:SerpApiEngine",
    "simulated": "zerosearch.engines.simulated:SimulatedEngine",
    "self": "zerosearch.engines.self_search:SelfSearchEngine",  # the policy itself; bind_policy() before use
}


SIM_DTYPES = ("auto", "float32", "bfloat16", "float16")  # EngineConfig.dtype's values (its Literal spells them too)


@dataclass
class EngineConfig:
    """One search engine's settings: `name` picks the engine, which reads the fields below that concern it."""

    name: str = "bm25"  # which engine (a key of ENGINES)
    k: int = 5  # documents per query

    # Local corpora (bm25, dense): Search-R1 JSONL `{id, title?, contents}`; index cached beside it
    # (or under index_dir) and rebuilt when the corpus changes.
    corpus: str | None = None
    index_dir: str | None = None  # where the index is kept (None: beside the corpus, else the cache dir)
    embed_model: str | None = None  # dense: a sentence-transformers model dir or name
    duplicate_ids: Literal["error", "keep-first"] = "error"  # a corpus repeating a passage id is refused

    # Remote engines: http retrieval server(s), or OpenAI-compatible simulator endpoint(s).
    # Several endpoints are load-balanced.
    endpoint: list[str] = field(default_factory=list)
    api_key_env: str = "SERPAPI_API_KEY"  # serpapi key (or OpenAI-compatible key) read from this variable
    # Bearer token for an http endpoint (`zerosearch serve --token-env`) or the simulator's
    # OpenAI-compatible one, read from this variable (None: no token); unset or empty is an error.
    endpoint_token_env: str | None = None
    timeout: float = 30.0  # seconds per request
    retries: int = 3  # bounded; never retry forever
    backoff: float = 0.5  # seconds, doubled each retry

    # Simulated engine (and `self`, which reads k, doc_words, sim_mode, temperature, top_p, max_new_tokens, seed).
    model: str = "smollm2-135m-instruct"  # in-process model, or the model name sent to the endpoint
    sim_mode: Literal["prompt", "sft"] = "prompt"  # "prompt": for an un-tuned model; "sft": a tuned one
    answer_blind: bool = False  # True: the simulator never sees question or gold answers (for evaluation)
    temperature: float = 1.0  # the simulator's sampling temperature (0: greedy)
    top_p: float = 1.0  # the simulator's nucleus sampling
    max_new_tokens: int = 400  # the simulator's output budget for the k documents of one query
    doc_words: int = 30  # words per simulated document, as the simulator is asked to write them
    max_query_tokens: int = 128  # longer queries are cut (and to what the model's context can hold)
    batch_size: int = 8  # the in-process simulator's generation batch
    # The in-process simulator's weights: "auto" = bf16 on a GPU, fp32 on a CPU; "bfloat16" on a CPU with
    # native bf16 decodes faster (its weights never train, so nothing is lost to rounding updates).
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Gold-answer leak check on simulated documents (zerosearch.engines.leak): "flag" marks and counts
    # them, "replace" gives the policy the answer-blind result instead, "off" does nothing.
    leak_guard: Literal["off", "flag", "replace"] = "flag"
    seed: int = 0  # the simulator's sampling seed

    # Persistent SQLite cache in front of a real engine (None: no cache).
    cache: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.endpoint, str):
            self.endpoint = [e for e in self.endpoint.split(",") if e]
        if self.name not in ENGINES:
            raise ValueError(f"unknown engine {self.name!r}; choose one of {', '.join(ENGINES)}")
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise ValueError(f"engine k must be an integer >= 1, got {self.k!r}")
        if self.dtype not in SIM_DTYPES:
            raise ValueError(f"engine dtype must be one of {', '.join(SIM_DTYPES)}, got {self.dtype!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "engine config") -> EngineConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{source}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | Path) -> EngineConfig:
        import yaml

        path = Path(path)
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of engine fields")
        return cls.from_dict(data.get("engine", data), source=str(path))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EngineConfig:
        """The YAML file (if any) first, then every flag the user actually gave."""
        base = cls.from_yaml(args.engine_config).__dict__ if getattr(args, "engine_config", None) else {}
        given = {f.name: getattr(args, f"engine_{f.name}") for f in dataclasses.fields(cls)}
        merged = {**base, **{k: v for k, v in given.items() if v is not None}}
        return cls.from_dict(merged)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def on_world(self, world: str | Path | None, *, world_dir: str | Path | None = None) -> EngineConfig:
        """`corpus: world` made concrete: the synthetic world's corpus.jsonl, from `world` (the folder the
        command's data came from) or else the built-in world (in `world_dir` or the cache, built on first use)."""
        if self.corpus != "world":
            return self
        if world is None:
            from zerosearch.data.world import cached_world

            world = cached_world(world_dir=world_dir)
        return dataclasses.replace(self, corpus=str(Path(world) / "corpus.jsonl"))


def add_engine_arguments(parser: argparse.ArgumentParser, *, default: str | None = None) -> None:
    """The engine flags, identical on every command. Unset flags stay None so YAML values survive."""
    g = parser.add_argument_group("search engine")
    g.add_argument("--engine", dest="engine_name", choices=list(ENGINES), default=default,
                   help="which engine (default: %(default)s)")
    g.add_argument("--engine-config", help="YAML file of engine fields; flags override it")
    g.add_argument("--k", dest="engine_k", type=int, help="documents per query (default 5)")
    g.add_argument("--corpus", dest="engine_corpus", help="JSONL corpus for bm25/dense")
    g.add_argument("--duplicate-ids", dest="engine_duplicate_ids", choices=("error", "keep-first"),
                   help="a corpus with a repeated passage id: refuse it (default) or index the first of each")
    g.add_argument("--index-dir", dest="engine_index_dir", help="where to keep the index")
    g.add_argument("--embed-model", dest="engine_embed_model", help="dense: embedding model")
    g.add_argument("--endpoint", dest="engine_endpoint", help="URL(s), comma-separated, load-balanced")
    g.add_argument("--api-key-env", dest="engine_api_key_env", help="env var holding the API key")
    g.add_argument("--endpoint-token-env", dest="engine_endpoint_token_env", metavar="NAME",
                   help="env var holding the bearer token the --endpoint server wants (http, simulated)")
    g.add_argument("--timeout", dest="engine_timeout", type=float, help="seconds per request")
    g.add_argument("--retries", dest="engine_retries", type=int, help="bounded retries per request")
    g.add_argument("--backoff", dest="engine_backoff", type=float, help="first retry delay, doubled each time")
    g.add_argument("--sim-model", dest="engine_model", help="simulator model (name, dir, or endpoint model)")
    g.add_argument("--sim-mode", dest="engine_sim_mode", choices=("prompt", "sft"), help="simulator prompt family")
    g.add_argument("--answer-blind", dest="engine_answer_blind", action="store_const", const=True,
                   help="simulator never sees the question or gold answers")
    g.add_argument("--temperature", dest="engine_temperature", type=float, help="simulator sampling temperature")
    g.add_argument("--top-p", dest="engine_top_p", type=float, help="simulator nucleus sampling")
    g.add_argument("--max-new-tokens", dest="engine_max_new_tokens", type=int, help="simulator output budget")
    g.add_argument("--doc-words", dest="engine_doc_words", type=int, help="simulator words per document")
    g.add_argument("--sim-max-query-tokens", dest="engine_max_query_tokens", type=int,
                   help="simulator: cut longer queries to this many tokens (default 128)")
    g.add_argument("--sim-batch-size", dest="engine_batch_size", type=int, help="simulator generation batch")
    g.add_argument("--sim-dtype", dest="engine_dtype", choices=SIM_DTYPES,
                   help="in-process simulator weights (auto: bf16 on GPU, fp32 on CPU)")
    g.add_argument("--leak-guard", dest="engine_leak_guard", choices=("off", "flag", "replace"),
                   help="gold-answer leak check on simulated docs")
    g.add_argument("--engine-seed", dest="engine_seed", type=int, help="simulator sampling seed")
    g.add_argument("--cache", dest="engine_cache", help="SQLite cache file in front of a real engine")
