"""The HTTP search server (`zerosearch.engines.server`), and the `search` and `serve` commands.

Real servers listen on 127.0.0.1 only, on a free port, and stop at the end of their test.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from zerosearch.cli import main
from zerosearch.engines import Document, SearchEngine, SearchError, SearchRequest
from zerosearch.engines.bm25 import BM25Engine
from zerosearch.engines.http import HttpEngine
from zerosearch.engines.server import DEFAULT_MAX_K, DEFAULT_MAX_QUERIES, MicroBatcher, create_app, serving

PASSAGES = [
    {"id": "p1", "contents": '"Eiffel Tower"\nThe Eiffel Tower is a wrought-iron lattice tower in Paris, France.'},
    {"id": "p2", "title": "Great Wall", "contents": "The Great Wall of China was built across northern China."},
    {"id": "p3", "contents": "Mount Everest is the highest mountain above sea level, in the Himalayas."},
    {"id": "p4", "contents": '"Python (language)"\nPython is a programming language created by Guido van Rossum.'},
]


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PASSAGES), encoding="utf-8")
    return path


@pytest.fixture
def bm25(corpus):
    with BM25Engine(corpus) as engine:
        yield engine


class EchoEngine(SearchEngine):
    """One document per request spelling out what the engine received; records each batch.

    Query "bad" is refused (ValueError, as the simulator refuses a request without its question),
    query "down" fails (SearchError, as an unreachable upstream does).
    """

    def __init__(self, name: str = "echo", delay: float = 0.0):
        self.name, self.delay = name, delay
        self.batches: list[list[str]] = []
        self._lock = threading.Lock()

    def search(self, requests):
        with self._lock:
            self.batches.append([r.query for r in requests])
        time.sleep(self.delay)
        queries = {r.query for r in requests}
        if "bad" in queries:
            raise ValueError("query 'bad' is refused")
        if "down" in queries:
            raise SearchError("upstream unreachable")
        return [[Document(title=r.query, text=json.dumps([r.k, r.row_id, r.question, r.golden_answers, r.mode,
                                                          r.noise_prob]), source="echo")] for r in requests]


# --- endpoints -----------------------------------------------------------------------------------------


def test_search_health_and_metrics_over_bm25(bm25):
    client = TestClient(create_app(bm25, default_k=2))
    assert client.get("/health").json() == {"status": "ok", "engine": bm25.identity()}
    before = client.get("/metrics").json()
    assert (before["requests"], before["queries"], before["latency_ms"]["count"]) == (0, 0, 0)

    r = client.post("/search", json={"requests": [{"query": "who created the Python language", "k": 1},
                                                  {"query": "the tower in Paris and the wall of China"}]})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [sorted(d["id"] for d in docs) for docs in results] == [["p4"], ["p1", "p2"]]  # k=1, then default_k
    top = results[0][0]
    assert top["score"] > 0 and top == {"title": "Python (language)", "text": PASSAGES[3]["contents"].split("\n", 1)[1],
                                        "source": "bm25", "id": "p4", "score": top["score"], "meta": {}}
    assert client.post("/search", json={"requests": []}).json() == {"results": []}

    m = client.get("/metrics").json()
    assert (m["requests"], m["queries"], m["errors"], m["rejected"]) == (2, 2, 0, 0)
    assert m["latency_ms"]["count"] == 2 and 0 < m["latency_ms"]["p50"] <= m["latency_ms"]["p99"]
    assert m["engine"] == bm25.identity() and m["engine_stats"]["queries"] == 2
    assert m["batching"]["enabled"] is False and m["uptime_s"] >= 0


def test_retrieve_speaks_search_r1(bm25):
    client = TestClient(create_app(bm25, default_k=3))
    body = client.post("/retrieve", json={"queries": ["Eiffel tower Paris", "wall of China"], "topk": 1,
                                          "return_scores": True}).json()
    hits = body["result"]
    assert [[h["document"] for h in q] for q in hits] == [
        [{"id": "p1", "contents": PASSAGES[0]["contents"]}],
        [{"id": "p2", "contents": '"Great Wall"\n' + PASSAGES[1]["contents"]}],  # its title field, Search-R1 style
    ]
    assert all(set(q[0]) == {"document", "score"} and isinstance(q[0]["score"], float) and q[0]["score"] > 0
               for q in hits)
    # Search-R1's defaults: no scores (bare documents), the server's own topk; unknown fields ignored.
    bare = client.post("/retrieve", json={"queries": ["highest mountain Himalayas"], "extra": 1}).json()
    assert bare == {"result": [[{"id": "p3", "contents": PASSAGES[2]["contents"]}]]}


def test_http_engine_round_trip_matches_the_engine_itself(bm25):
    queries = [SearchRequest("who created Python", k=2), SearchRequest("", k=2), SearchRequest("Great Wall", k=1)]
    direct = bm25.search(queries)
    with serving(create_app(bm25)) as url, HttpEngine([url], retries=0) as remote:
        # JSON carries floats exactly, so even the scores match.
        assert remote.search(queries) == [[Document(d.title, d.text, "http", d.id, d.score) for d in docs]
                                          for docs in direct]


def test_keep_alive_requests_are_not_delayed(bm25):
    # Regression: without TCP_NODELAY on the listening socket every response after a connection's
    # first took ~40 ms (Nagle's algorithm against delayed ACKs).
    with serving(create_app(bm25)) as url, httpx.Client() as client:
        times = []
        for _ in range(15):
            t0 = time.perf_counter()
            assert client.get(f"{url}/health").status_code == 200
            times.append(time.perf_counter() - t0)
    assert sorted(times)[len(times) // 2] < 0.02


@pytest.mark.parametrize("path, body, status, message", [
    ("/search", {"requests": [{"query": "q"}] * 4}, 413, "too many queries in one request: 4 > max_queries=3"),
    ("/retrieve", {"queries": ["q"] * 4}, 413, "max_queries=3"),
    ("/search", {"requests": [{"query": "q", "k": 11}]}, 422, "k=11 is above this server's max_k=10"),
    ("/retrieve", {"queries": ["q"], "topk": 11}, 422, "max_k=10"),
    ("/search", {"requests": [{"k": 2}]}, 422, "requests.0.query: Field required"),
    ("/search", {"requests": [{"query": "q", "mode": "loud"}]}, 422,
     "requests.0.mode: Input should be 'useful' or 'noisy'"),
    ("/search", {"requests": [{"query": "q", "quary": "typo"}]}, 422,
     "requests.0.quary: Extra inputs are not permitted"),
    ("/search", {"requests": [{"query": "q", "k": 0}]}, 422,
     "requests.0.k: Input should be greater than or equal to 1"),
    ("/retrieve", {"topk": 3}, 422, "queries: Field required"),
    ("/search", b"{not json", 400, "body is not valid JSON"),
])
def test_bad_requests_get_a_clear_4xx(path, body, status, message):
    engine = EchoEngine()
    client = TestClient(create_app(engine, max_queries=3, max_k=10))
    kw = ({"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes)
          else {"json": body})
    r = client.post(path, **kw)
    assert r.status_code == status and message in r.json()["detail"]
    assert engine.batches == []  # never reached the engine
    m = client.get("/metrics").json()
    assert (m["rejected"], m["requests"], m["errors"]) == (1, 0, 0)


def test_engine_failure_is_502_and_counted_refusal_is_422():
    client = TestClient(create_app(EchoEngine()))
    r = client.post("/search", json={"requests": [{"query": "down"}]})
    assert r.status_code == 502 and r.json()["detail"] == "search engine failed: SearchError: upstream unreachable"
    r = client.post("/retrieve", json={"queries": ["bad"]})
    assert r.status_code == 422 and r.json()["detail"] == "invalid request: query 'bad' is refused"
    assert client.post("/retrieve", json={"queries": ["fine"]}).status_code == 200
    m = client.get("/metrics").json()
    assert (m["requests"], m["errors"], m["rejected"], m["latency_ms"]["count"]) == (3, 1, 1, 3)


def test_search_passes_every_request_field_to_the_engine():
    client = TestClient(create_app(EchoEngine(), default_k=4))
    item = {"query": "q", "k": 2, "row_id": "r7", "question": "Who?", "golden_answers": ["Bob", "Robert"],
            "mode": "noisy", "noise_prob": 0.25}
    docs = client.post("/search", json={"requests": [item, {"query": "plain"}]}).json()["results"]
    assert json.loads(docs[0][0]["text"]) == [2, "r7", "Who?", ["Bob", "Robert"], "noisy", 0.25]
    assert json.loads(docs[1][0]["text"]) == [4, None, None, None, None, None]


# --- micro-batching ------------------------------------------------------------------------------------


def _post_concurrently(url: str, bodies: list[dict]) -> list[httpx.Response]:
    with httpx.Client(timeout=10) as client, ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda b: client.post(f"{url}/search", json=b), bodies))


def test_concurrent_requests_are_merged_into_few_engine_calls():
    engine = EchoEngine(delay=0.1)  # a slow engine: requests pile up while it works
    n = 12
    app = create_app(engine, batch_window_ms=20, max_batch=64)
    with serving(app) as url:
        responses = _post_concurrently(url, [{"requests": [{"query": f"q{i}"}, {"query": f"q{i}-b"}]}
                                             for i in range(n)])
        metrics = httpx.get(f"{url}/metrics").json()
    assert all(r.status_code == 200 for r in responses)
    for i, r in enumerate(responses):  # each client gets its own results, in its own order
        assert [docs[0]["title"] for docs in r.json()["results"]] == [f"q{i}", f"q{i}-b"]
    assert len(engine.batches) < n and sorted(q for b in engine.batches for q in b) == sorted(
        q for i in range(n) for q in (f"q{i}", f"q{i}-b"))
    assert metrics["batching"]["engine_calls"] == len(engine.batches)
    assert metrics["batching"]["mean_batch_queries"] == pytest.approx(2 * n / len(engine.batches))


def test_batcher_retries_a_refused_batch_request_by_request_and_keeps_max_batch():
    engine = EchoEngine()
    batcher = MicroBatcher(engine, window_s=5.0, max_batch=3)  # a batch closes early once it holds 3 queries
    try:
        futures = [batcher.submit([SearchRequest(q)]) for q in ("a", "bad", "c")]
        assert futures[0].result(timeout=5)[0][0].title == "a" and futures[2].result(timeout=5)[0][0].title == "c"
        with pytest.raises(ValueError, match="refused"):
            futures[1].result(timeout=5)
        assert engine.batches == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]  # merged, then one by one

        engine.batches.clear()
        big = batcher.submit([SearchRequest(f"x{i}") for i in range(4)])  # larger than max_batch: alone
        assert len(big.result(timeout=5)) == 4 and engine.batches == [[f"x{i}" for i in range(4)]]
    finally:
        batcher.close()
    assert batcher.stats()["engine_calls"] == 5


def test_batching_is_on_by_default_for_the_simulator_only():
    assert TestClient(create_app(EchoEngine("simulated"))).get("/metrics").json()["batching"]["enabled"] is True
    assert TestClient(create_app(EchoEngine())).get("/metrics").json()["batching"]["enabled"] is False
    client = TestClient(create_app(EchoEngine(), batch_window_ms=5))
    with client:  # lifespan shutdown stops the batcher thread ...
        assert client.post("/retrieve", json={"queries": ["x"]}).status_code == 200
    assert client.post("/retrieve", json={"queries": ["y"]}).status_code == 200  # ... which restarts on demand


# --- commands ------------------------------------------------------------------------------------------


def test_cli_search_prints_ranked_results_and_json(corpus, capsys):
    assert main(["search", "who created Python", "Great Wall of China", "--corpus", str(corpus), "--k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "query: who created Python  (1 result, bm25)"
    assert out[1].startswith("  1. Python (language)  score ") and out[1].endswith("[p4]")
    assert out[2] == "     Python is a programming language created by Guido van Rossum."
    assert out[3] == "query: Great Wall of China  (1 result, bm25)"

    assert main(["search", "Eiffel", "--engine", "bm25", "--corpus", str(corpus), "--json"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["query"] == "Eiffel" and [d["id"] for d in line["results"]] == ["p1"]

    assert main(["search", "q", "--engine", "simulated"]) == 2
    assert "give --question and --answer" in capsys.readouterr().err


def test_cli_serve_help_and_a_real_run(corpus, capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--engine", "--corpus", "--host", "--port", "--max-k", "--batch-window-ms"):
        assert flag in out
    assert f"(default: {DEFAULT_MAX_K})" in out and f"(default: {DEFAULT_MAX_QUERIES})" in out

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "zerosearch", "serve", "--corpus", str(corpus), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = proc.stdout.readline()
        assert first.startswith("serving bm25:corpus.jsonl:"), first + proc.stderr.read()
        url = first.split(" on ")[1].strip()
        hits = httpx.post(f"{url}/retrieve", json={"queries": ["Eiffel"], "topk": 1}, timeout=10).json()["result"]
        assert hits[0][0]["id"] == "p1"
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a normal way to stop a server
        assert proc.wait(timeout=10) == 0 and "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
