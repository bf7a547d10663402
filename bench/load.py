"""Load on `zerosearch serve`: N concurrent requests at a locally started server (127.0.0.1, a free port).

The server is a separate process (`python -m zerosearch serve --engine bm25`, so client and server do not
share a GIL) over the synthetic world's corpus (or `--corpus FILE`); each phase starts a fresh one so its
/metrics cover that phase alone. One-query Search-R1 `/retrieve` requests, the world's questions as queries.

- baseline: `--baseline-requests` requests one at a time: the latency of an idle server.
- burst: `--requests` requests all in flight at once (asyncio, one connection each), default limits:
  every one must succeed (errors 0); throughput, client p50/p99, and the server's own queue wait vs
  compute time from /metrics.
- overload: the same burst at a server started with `--max-pending` (default 64): the excess must be
  answered 503 with Retry-After, quickly, and everything else must succeed (errors other than 503: 0).

    python bench/load.py [--requests 1000] [--baseline-requests 200] [--max-pending 64] [--corpus FILE]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engines import corpus_queries, world_corpus  # noqa: E402  (bench/ is not a package)


def pct(xs: list[float], p: float) -> float | None:
    xs = sorted(xs)
    return round(xs[max(math.ceil(p * len(xs)) - 1, 0)], 2) if xs else None


class Server:
    """`zerosearch serve` in a subprocess on 127.0.0.1:0; the URL is read from its first line."""

    def __init__(self, corpus: Path, index_dir: str, *extra: str):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "zerosearch", "serve", "--engine", "bm25", "--corpus", str(corpus),
               "--index-dir", index_dir, "--host", "127.0.0.1", "--port", "0", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        first = self.proc.stdout.readline()  # type: ignore[union-attr]
        if " on " not in first:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {first}{self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.url = first.rsplit(" on ", 1)[1].strip()

    def metrics(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/metrics", timeout=30).json()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def fire(url: str, queries: list[str], k: int, concurrency: int) -> dict[str, Any]:
    """POST one /retrieve per query, at most `concurrency` in flight; client-side latency of each."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    retry_after: list[str] = []
    first_error: list[str] = []
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def one(client: httpx.AsyncClient, q: str) -> None:
        async with gate:
            t0 = time.perf_counter()
            try:
                r = await client.post(f"{url}/retrieve", json={"queries": [q], "topk": k, "return_scores": True})
                key = str(r.status_code)
                if r.status_code == 503:
                    retry_after.append(r.headers.get("retry-after", ""))
                elif r.status_code != 200 and not first_error:
                    first_error.append(f"HTTP {r.status_code}: {r.text[:100]}")
            except httpx.HTTPError as e:
                key = type(e).__name__
                if not first_error:
                    first_error.append(f"{key}: {e}")
            latencies.append((time.perf_counter() - t0) * 1000)
            statuses[key] = statuses.get(key, 0) + 1

    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(client, q) for q in queries))
        seconds = time.perf_counter() - t0
    ok = statuses.get("200", 0)
    return {"requests": len(queries), "concurrency": concurrency, "seconds": round(seconds, 3),
            "requests_per_s": round(len(queries) / seconds, 1), "ok_per_s": round(ok / seconds, 1),
            "statuses": statuses, "errors": len(queries) - ok - statuses.get("503", 0),
            "client_p50_ms": pct(latencies, 0.5), "client_p99_ms": pct(latencies, 0.99),
            "retry_after_present": all(retry_after) if retry_after else None,
            "first_error": first_error[0] if first_error else None}


def phase(corpus: Path, index_dir: str, queries: list[str], k: int, concurrency: int, *flags: str) -> dict[str, Any]:
    server = Server(corpus, index_dir, *flags)
    try:
        asyncio.run(fire(server.url, queries[:20], k, 4))  # connections, first touch of the mmapped index
        before = server.metrics()
        out = asyncio.run(fire(server.url, queries, k, concurrency))
        m = server.metrics()
    finally:
        server.close()
    # The warm-up's 20 requests are in the server's windows too; with >= 200 measured ones they barely move p50/p99.
    # Counters are the phase's own (the warm-up's overloaded or failed requests subtracted).
    return {**out, "server_flags": list(flags), "server_requests": m["requests"] - before["requests"],
            "server_errors": m["errors"] - before["errors"],
            "server_overloaded": m.get("overloaded", 0) - before.get("overloaded", 0),
            "server_rejected": m["rejected"] - before["rejected"],
            # .get: a server from before queue wait was reported (run with PYTHONPATH at an older checkout)
            "server_latency_ms": m["latency_ms"], "queue_wait_ms": m.get("queue_wait_ms"),
            "compute_ms": m.get("compute_ms")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", help="a Search-R1 JSONL corpus (default: the synthetic world)")
    ap.add_argument("--requests", type=int, default=1000, help="requests in the burst, all in flight at once")
    ap.add_argument("--baseline-requests", type=int, default=200)
    ap.add_argument("--max-pending", type=int, default=64, help="the overload phase's server --max-pending")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--phases", default="baseline,burst,overload", help="which phases to run, comma-separated")
    args = ap.parse_args()
    phases = set(args.phases.split(","))

    with tempfile.TemporaryDirectory(prefix="zs-load-") as tmp:
        if args.corpus:
            corpus, source = Path(args.corpus), args.corpus
            queries = [r.query for r in corpus_queries(corpus, args.requests)]
        else:
            corpus, reqs = world_corpus(Path(tmp), 1.0)
            source, queries = "synthetic world x1.0", [r.query for r in reqs]
        queries = [queries[i % len(queries)] for i in range(max(args.requests, args.baseline_requests))]
        baseline = phase(corpus, tmp, queries[: args.baseline_requests], args.k, 1) if "baseline" in phases else None
        burst = phase(corpus, tmp, queries[: args.requests], args.k, args.requests) if "burst" in phases else None
        overload = phase(corpus, tmp, queries[: args.requests], args.k, args.requests, "--max-pending",
                         str(args.max_pending)) if "overload" in phases else None
    print(json.dumps({
        "bench": "load", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": platform.node(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "corpus": source, "engine": "bm25",
        "baseline": baseline, "burst": burst, "overload": overload,
        "burst_p50_vs_baseline": round(burst["client_p50_ms"] / baseline["client_p50_ms"], 1)
        if burst and baseline else None}))


if __name__ == "__main__":
    main()
