"""Search-engine throughput: BM25 in-process, the simulator at batch 1 vs batched, and the HTTP server.

- bm25: queries/s of `BM25Engine.search` over the corpus, all queries in one call (the index is built
  first; its build time is reported separately).
- simulator: `SimulatedEngine` with an in-process model (`tiny-random` by default; `--sim-model
  smollm2-135m-instruct` for the real figure), the same queries once one `search` call per query, once
  all in one call (generated `--sim-batch` prompts at a time); queries/s, docs/s and the speed-up.
- server: `zerosearch.engines.server` over BM25 on 127.0.0.1 (uvicorn in this process), `--clients`
  threads each with its own keep-alive connection sending one-query Search-R1 `/retrieve` requests;
  requests/s, client-side latency p50/p99, and errors (must be 0).
- sim_server: the simulator behind the server, `--clients` concurrent one-query `/search` requests, with
  the micro-batcher on (`--batch-window-ms`) and off: what merging concurrent requests buys.

The corpus is the synthetic world (`zerosearch.data.world`, `--world-scale` times its default size, written to a
temporary folder) and its questions are the queries, unless `--corpus FILE` is given: then the queries
are the first words of its passages and the simulator runs answer-blind.

    python bench/engines.py [--corpus FILE] [--world-scale 1] [--bm25-queries 3000]
                            [--sim-model tiny-random] [--sim-queries 16] [--sim-batch 8] [--sim-max-new-tokens 48]
                            [--clients 8] [--server-requests 2000] [--sim-server-requests 32] [--torch-threads N]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from zerosearch.engines import SearchEngine, SearchRequest
from zerosearch.engines.bm25 import BM25Engine
from zerosearch.engines.server import create_app, serving

def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[max(math.ceil(p * len(xs)) - 1, 0)]


def world_corpus(folder: Path, scale: float) -> tuple[Path, list[SearchRequest]]:
    """The synthetic world in `folder`; its questions (with gold answers) as requests."""
    from zerosearch.data.world import WorldConfig, generate_world, write_world

    d = WorldConfig()
    cfg = WorldConfig(**{n: max(1, round(getattr(d, n) * scale))
                         for n in ("n_people", "n_places", "n_orgs", "n_works", "n_questions")})
    world = generate_world(cfg)
    write_world(world, folder)
    rows = [q for split in ("train", "dev", "test") for q in world.splits[split]]
    return folder / "corpus.jsonl", [SearchRequest(q["question"], row_id=q["id"], question=q["question"],
                                                  golden_answers=q["golden_answers"]) for q in rows]


def corpus_queries(path: Path, n: int) -> list[SearchRequest]:
    """The first eight words of the corpus's first `n` passages (no gold answers)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(SearchRequest(" ".join(json.loads(line)["contents"].split()[:8])))
                if len(out) == n:
                    break
    return out


def cycle(requests: list[SearchRequest], n: int) -> list[SearchRequest]:
    return [requests[i % len(requests)] for i in range(n)]


def bench_bm25(engine: BM25Engine, requests: list[SearchRequest]) -> dict[str, Any]:
    engine.search(requests[:10])  # first touch of the mmapped index
    t0 = time.perf_counter()
    results = engine.search(requests)
    seconds = time.perf_counter() - t0
    st = engine.stats()
    return {"passages": st["passages"], "index_build_s": st["index_build_s"], "queries": len(requests),
            "seconds": round(seconds, 3), "queries_per_s": round(len(requests) / seconds, 1),
            "no_results": sum(not r for r in results)}


def bench_simulator(engine: SearchEngine, requests: list[SearchRequest], batch: int) -> dict[str, Any]:
    engine.search(requests[:1])  # warm-up: kernels, allocator, stop-string tables

    def timed(calls: list[list[SearchRequest]]) -> dict[str, Any]:
        docs0 = engine.stats()["docs"]
        t0 = time.perf_counter()
        for call in calls:
            engine.search(call)
        seconds = time.perf_counter() - t0
        docs = engine.stats()["docs"] - docs0
        return {"seconds": round(seconds, 2), "queries_per_s": round(len(requests) / seconds, 2),
                "docs": docs, "docs_per_s": round(docs / seconds, 2)}

    one = timed([[r] for r in requests])
    batched = {**timed([requests]), "batch_size": batch}
    return {"queries": len(requests), "batch1": one, "batched": batched,
            "speedup": round(batched["queries_per_s"] / one["queries_per_s"], 2)}


def load(url: str, path: str, bodies: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    """POST `bodies` from `clients` threads (one keep-alive connection each); throughput and latency."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    turn = iter(range(len(bodies)))

    def worker() -> None:
        with httpx.Client(timeout=120) as client:
            while True:
                with lock:
                    i = next(turn, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    r = client.post(url + path, json=bodies[i])
                    ok = r.status_code == 200
                    error = "" if ok else f"HTTP {r.status_code}: {r.text[:100]}"
                except httpx.HTTPError as e:
                    error = f"{type(e).__name__}: {e}"
                ms = (time.perf_counter() - t0) * 1000
                with lock:
                    latencies.append(ms)
                    if error:
                        errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    return {"clients": clients, "requests": len(bodies), "seconds": round(seconds, 2),
            "requests_per_s": round(len(bodies) / seconds, 1), "p50_ms": round(pct(latencies, 0.5), 2),
            "p99_ms": round(pct(latencies, 0.99), 2), "errors": len(errors),
            "first_error": errors[0] if errors else None}


def bench_server(app: Any, path: str, bodies: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    with serving(app) as url:
        load(url, path, bodies[: clients], clients)  # connections and first requests
        out = load(url, path, bodies, clients)
        metrics = httpx.get(url + "/metrics").json()
    return {**out, "server_p50_ms": metrics["latency_ms"]["p50"], "server_p99_ms": metrics["latency_ms"]["p99"],
            "server_errors": metrics["errors"], "batching": metrics["batching"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", help="a Search-R1 JSONL corpus (default: the synthetic world)")
    ap.add_argument("--world-scale", type=float, default=1.0, help="world size, times its default (3000 passages)")
    ap.add_argument("--bm25-queries", type=int, default=3000)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--sim-model", default="tiny-random")
    ap.add_argument("--sim-queries", type=int, default=16)
    ap.add_argument("--sim-batch", type=int, default=8, help="simulator generation batch")
    ap.add_argument("--sim-max-new-tokens", type=int, default=48)
    ap.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients")
    ap.add_argument("--server-requests", type=int, default=2000)
    ap.add_argument("--sim-server-requests", type=int, default=32, help="0 skips the simulator server")
    ap.add_argument("--batch-window-ms", type=float, default=10.0)
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch intra-op threads (default: torch's choice); on a shared machine 1 is steadier")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="zs-bench-") as tmp:
        if args.corpus:
            corpus, source = Path(args.corpus), args.corpus
            queries = corpus_queries(corpus, max(args.bm25_queries, args.sim_queries))
        elif importlib.util.find_spec("zerosearch.data.world") is not None:
            corpus, queries = world_corpus(Path(tmp), args.world_scale)
            source = f"synthetic world x{args.world_scale}"
        else:
            raise SystemExit("no --corpus given and zerosearch.data.world is not available")
        for r in queries:
            r.k = args.k
        answer_blind = queries[0].question is None

        engine = BM25Engine(corpus, index_dir=tmp)
        bm25 = bench_bm25(engine, cycle(queries, args.bm25_queries))
        bodies = [{"queries": [r.query], "topk": args.k, "return_scores": True}
                  for r in cycle(queries, args.server_requests)]
        server = bench_server(create_app(engine, max_k=max(args.k, 100)), "/retrieve", bodies, args.clients)
        engine.close()

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    from zerosearch.engines.sim_backends import TransformersBackend
    from zerosearch.engines.simulated import SimulatedEngine

    backend = TransformersBackend(args.sim_model, batch_size=args.sim_batch, max_new_tokens=args.sim_max_new_tokens,
                                  seed=args.seed)
    sim = SimulatedEngine(backend, k=args.k, answer_blind=answer_blind, seed=args.seed)
    sim_requests = queries[: args.sim_queries]
    simulator = {"model": args.sim_model, "device": backend.device, "max_new_tokens": args.sim_max_new_tokens,
                 "answer_blind": answer_blind, **bench_simulator(sim, sim_requests, args.sim_batch)}
    sim_server = None
    if args.sim_server_requests:
        bodies = [{"requests": [{"query": r.query, "k": r.k, "question": r.question, "golden_answers": r.golden_answers}]}
                  for r in cycle(sim_requests, args.sim_server_requests)]
        runs = {name: bench_server(create_app(sim, default_k=args.k, batch_window_ms=window), "/search", bodies,
                                   args.clients)
                for name, window in (("batched", args.batch_window_ms), ("unbatched", 0.0))}
        speedup = runs["batched"]["requests_per_s"] / runs["unbatched"]["requests_per_s"]
        sim_server = {**runs, "speedup": round(speedup, 2)}
    sim.close()

    print(json.dumps({"bench": "engines", "corpus": source, "cpus": os.cpu_count(),
                      "torch_threads": torch.get_num_threads(), "k": args.k, "bm25": bm25, "server": server,
                      "simulator": simulator, "sim_server": sim_server}))


if __name__ == "__main__":
    main()
