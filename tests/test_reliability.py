"""Hardening found by fault and load tests (issue 18): request limits, bearer tokens, abandoned requests and
backpressure, eval double counting, duplicate passage ids, non-UTF-8 QA files, and the smaller ones.

Every server here listens on 127.0.0.1 on a free port (or is an in-process TestClient); every wait is
bounded, and every slow engine is either gated by an Event the test releases or sleeps a fixed time.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
from fakes import FakeServer, free_port
from fastapi.testclient import TestClient

from zerosearch.cli import main
from zerosearch.engines import Document, EngineConfig, SearchEngine, SearchError, SearchRequest, build_engine
from zerosearch.engines.server import create_app, serving

WAIT = 10.0  # the longest any condition is waited for


def until(condition, timeout: float = WAIT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class GatedEngine(SearchEngine):
    """Records each call's queries when it starts; blocks until `gate` is set (or sleeps `delay`)."""

    name = "gated"

    def __init__(self, delay: float | None = None):
        self.delay = delay
        self.gate = threading.Event()
        self.calls: list[list[str]] = []
        self.finished = 0
        self._lock = threading.Lock()

    def search(self, requests):
        with self._lock:
            self.calls.append([r.query for r in requests])
        if self.delay is not None:
            time.sleep(self.delay)
        else:
            self.gate.wait(WAIT)
        with self._lock:
            self.finished += 1
        return [[Document(title=r.query, text="t", source="gated")] for r in requests]

    def seen(self) -> list[str]:
        with self._lock:
            return [q for call in self.calls for q in call]


def metrics(url: str, **kw: Any) -> dict[str, Any]:
    return httpx.get(f"{url}/metrics", timeout=5, **kw).json()


def post_in_background(url: str, body: dict, results: list, timeout: float = WAIT) -> threading.Thread:
    def go() -> None:
        try:
            results.append(httpx.post(f"{url}/retrieve", json=body, timeout=timeout))
        except httpx.HTTPError as e:
            results.append(e)
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


# --- 1. size limits ---------------------------------------------------------------------------------------


def test_a_body_above_the_cap_is_413_from_its_content_length_and_never_reaches_the_engine():
    engine = GatedEngine(delay=0)
    client = TestClient(create_app(engine, max_body_bytes=10_000))
    huge = json.dumps({"queries": ["word " * 1_000_000]})  # 5 MB: a pasted page, not a query
    t0 = time.perf_counter()
    r = client.post("/retrieve", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max_body_bytes=10000" in r.json()["detail"]
    assert time.perf_counter() - t0 < 2 and engine.calls == []
    m = client.get("/metrics").json()
    assert m["rejected"] == 1 and m["rejected_by"] == {"body_too_large": 1} and m["limits"]["max_body_bytes"] == 10_000


def test_a_chunked_body_is_cut_off_as_it_streams_past_the_cap():
    engine = GatedEngine(delay=0)

    def chunks():  # no Content-Length: the server has to count
        yield b'{"queries": ["'
        for _ in range(40):
            yield b"x" * 1000
        yield b'"]}'

    with serving(create_app(engine, max_body_bytes=10_000)) as url:
        r = httpx.post(f"{url}/retrieve", content=chunks(), headers={"content-type": "application/json"}, timeout=5)
        assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]
        small = httpx.post(f"{url}/retrieve", json={"queries": ["fine"]}, timeout=5)
        assert small.status_code == 200
        assert metrics(url)["rejected_by"] == {"body_too_large": 1}
    assert engine.seen() == ["fine"]


@pytest.mark.parametrize("path, body, where", [
    ("/retrieve", {"queries": ["ok", "q" * 101]}, "queries.1 has 101 characters"),
    ("/search", {"requests": [{"query": "q" * 101}]}, "requests.0.query has 101 characters"),
    ("/search", {"requests": [{"query": "ok", "question": "w" * 500, "golden_answers": ["a"]}]},
     "requests.0.question has 500 characters"),
])
def test_a_query_longer_than_max_query_chars_is_422(path, body, where):
    engine = GatedEngine(delay=0)
    client = TestClient(create_app(engine, max_query_chars=100))
    r = client.post(path, json=body)
    assert r.status_code == 422 and where in r.json()["detail"] and "max_query_chars=100" in r.json()["detail"]
    assert engine.calls == [] and client.get("/metrics").json()["rejected_by"] == {"query_too_long": 1}


def test_limits_are_validated_and_default_sanely():
    m = TestClient(create_app(GatedEngine(delay=0))).get("/metrics").json()["limits"]
    assert m["max_body_bytes"] == 1 << 20 and m["max_query_chars"] == 2048 and m["max_pending"] >= 1000
    for bad in ({"max_body_bytes": 0}, {"max_query_chars": 0}, {"max_pending": 0}, {"batch_window_ms": -1},
                {"batch_window_ms": float("nan")}, {"workers": 0}, {"token": " "}):
        with pytest.raises(ValueError):
            create_app(GatedEngine(delay=0), **bad)


@pytest.fixture(scope="module")
def tiny_backend():
    from zerosearch.engines.sim_backends import TransformersBackend
    from zerosearch.models import load

    return lambda: TransformersBackend("tiny-random", loaded=load("tiny-random", seed=0), max_new_tokens=4,
                                       temperature=0.0)


def _captured(backend) -> list[str]:
    prompts: list[str] = []
    generate = backend.generate

    def spy(ps, stop=(), prefix=""):
        prompts.extend(ps)
        return generate(ps, stop, prefix)
    backend.generate = spy
    return prompts


def test_the_simulator_cuts_a_long_query_to_max_query_tokens(tiny_backend):
    from zerosearch.engines.simulated import SimulatedEngine

    backend = tiny_backend()
    prompts = _captured(backend)
    engine = SimulatedEngine(backend, k=2, answer_blind=True, max_query_tokens=16)
    long_query = " ".join(f"w{i}" for i in range(3000))
    t0 = time.perf_counter()
    (docs,) = engine.search([SearchRequest(long_query, k=2)])
    assert time.perf_counter() - t0 < 30
    assert long_query not in prompts[0] and "w0" in prompts[0] and "w2999" not in prompts[0]
    kept = backend.tokenizer(long_query, add_special_tokens=False).input_ids[:16]
    assert backend.tokenizer.decode(kept, skip_special_tokens=True) in prompts[0]
    assert all(d.meta.get("query_truncated") for d in docs) or docs == []
    assert engine.stats()["query_truncated"] == 1
    (short,) = engine.search([SearchRequest("w1 w2", k=2)])
    assert engine.stats()["query_truncated"] == 1 and not any(d.meta.get("query_truncated") for d in short)


def test_the_simulator_cuts_a_query_to_what_the_models_context_can_hold(tiny_backend):
    from zerosearch.engines.simulated import SimulatedEngine

    backend = tiny_backend()
    backend.model.config.max_position_embeddings = 400  # a small context: the prompt must still fit it
    prompts = _captured(backend)
    engine = SimulatedEngine(backend, k=2, answer_blind=True, max_query_tokens=100_000)
    engine.search([SearchRequest(" ".join(f"w{i}" for i in range(3000)), k=2)])
    from zerosearch.engines.simulated import REPLY_PREFIX
    from zerosearch.prompts import render_prompt

    n = len(backend.tokenizer(render_prompt(prompts[0], backend.tokenizer) + REPLY_PREFIX,
                              add_special_tokens=False).input_ids)
    assert 300 < n and n + backend.max_new_tokens <= 400 + 2  # full to the brim (+2: re-tokenizing at the cut)
    assert engine.stats()["query_truncated"] == 1


# --- 2. bearer token --------------------------------------------------------------------------------------

TOKEN = "tok+en/with=odd chars-0123456789"


def test_a_token_protects_every_endpoint_in_constant_time_and_is_never_echoed():
    engine = GatedEngine(delay=0)
    client = TestClient(create_app(engine, token=TOKEN))
    for path in ("/health", "/metrics"):
        assert client.get(path).status_code == 401
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        r = client.post("/retrieve", json={"queries": ["q"]}, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and TOKEN not in r.text
    assert engine.calls == []
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/retrieve", json={"queries": ["q"]}, headers=good).status_code == 200
    m = client.get("/metrics", headers=good).json()
    assert m["rejected_by"] == {"unauthorized": 6} and m["limits"]["auth"] is True and TOKEN not in json.dumps(m)


def test_the_http_engine_sends_the_token_from_its_env_var(monkeypatch):
    engine = GatedEngine(delay=0)
    monkeypatch.setenv("ZS_TEST_TOKEN", TOKEN)
    with serving(create_app(engine, token=TOKEN)) as url:
        cfg = EngineConfig(name="http", endpoint=[url], endpoint_token_env="ZS_TEST_TOKEN", retries=0)
        with build_engine(cfg) as remote:
            assert remote.search([SearchRequest("q", k=1)])[0][0].title == "q"
        with build_engine(EngineConfig(name="http", endpoint=[url], retries=2, backoff=0.01)) as anonymous:
            with pytest.raises(SearchError, match="HTTP 401") as err:
                anonymous.search([SearchRequest("q", k=1)])
        assert TOKEN not in str(err.value)
        assert metrics(url, headers={"Authorization": f"Bearer {TOKEN}"})["rejected_by"] == {"unauthorized": 1}
    monkeypatch.delenv("ZS_TEST_TOKEN")
    with pytest.raises(ValueError, match="ZS_TEST_TOKEN is unset or empty"):
        build_engine(EngineConfig(name="http", endpoint=["http://127.0.0.1:1"], endpoint_token_env="ZS_TEST_TOKEN"))


def test_the_simulators_endpoint_client_sends_the_token(monkeypatch):
    def chat(method, path, query, body):
        return 200, {"choices": [{"finish_reason": "stop", "message": {"content": "Doc 1: a"}}]}

    monkeypatch.setenv("ZS_TEST_TOKEN", TOKEN)
    with FakeServer(chat) as server:
        cfg = EngineConfig(name="simulated", endpoint=[server.url], endpoint_token_env="ZS_TEST_TOKEN",
                           answer_blind=True, retries=0)
        with build_engine(cfg) as engine:
            engine.search([SearchRequest("q", k=1)])
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "contents": f"passage {i} about topic {i}"}) + "\n"
                            for i in range(4)), encoding="utf-8")
    return path


@pytest.fixture
def fake_serve(monkeypatch):
    """`zerosearch serve` without binding anything: records what it would have served with."""
    import zerosearch.engines.server as server

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(server, "serve", lambda engine, host, port, **kw: calls.append({"host": host, **kw}))
    return calls


def test_serve_refuses_a_non_loopback_host_without_a_token(corpus, fake_serve, capsys, monkeypatch):
    assert main(["serve", "--corpus", str(corpus), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "--token-env" in err and "--insecure" in err and fake_serve == []

    assert main(["serve", "--corpus", str(corpus), "--host", "0.0.0.0", "--insecure"]) == 0
    assert "warning: --insecure" in capsys.readouterr().err and fake_serve[-1]["token"] is None

    monkeypatch.setenv("ZS_TEST_TOKEN", TOKEN)
    assert main(["serve", "--corpus", str(corpus), "--host", "0.0.0.0", "--token-env", "ZS_TEST_TOKEN"]) == 0
    out = capsys.readouterr()
    assert fake_serve[-1]["token"] == TOKEN and TOKEN not in out.out + out.err

    assert main(["serve", "--corpus", str(corpus), "--token-env", "ZS_UNSET_TOKEN"]) == 2
    assert "ZS_UNSET_TOKEN is unset or empty" in capsys.readouterr().err
    assert main(["serve", "--corpus", str(corpus)]) == 0 and fake_serve[-1]["token"] is None  # loopback: fine
    assert len(fake_serve) == 3


def test_loopback_hosts():
    from zerosearch.engines.server import is_loopback, serve

    with pytest.raises(ValueError, match="reachable from other machines"):  # refused before anything is bound
        serve(GatedEngine(delay=0), "0.0.0.0", free_port())

    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.2") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("")


# --- 3. abandoned requests, backpressure, queue wait ------------------------------------------------------


@pytest.mark.parametrize("batch_window_ms", [0, 5])
def test_a_query_whose_client_gave_up_while_queued_is_never_computed(batch_window_ms):
    engine = GatedEngine()
    with serving(create_app(engine, workers=1, batch_window_ms=batch_window_ms)) as url:
        first: list = []
        t = post_in_background(url, {"queries": ["first"]}, first)
        until(lambda: engine.seen() == ["first"], what="the first request to reach the engine")
        with pytest.raises(httpx.ReadTimeout):  # a client that gives up while its request waits its turn
            httpx.post(f"{url}/retrieve", json={"queries": ["abandoned"]}, timeout=0.3)
        until(lambda: metrics(url)["abandoned"] == 1, what="the server to notice the disconnect")
        engine.gate.set()
        t.join(WAIT)
        assert first[0].status_code == 200
        assert httpx.post(f"{url}/retrieve", json={"queries": ["later"]}, timeout=5).status_code == 200
        m = metrics(url)
    assert engine.seen() == ["first", "later"]  # "abandoned" never reached the engine
    assert m["abandoned"] == 1 and m["errors"] == 0


def test_http_engine_retries_do_not_compute_one_query_several_times():
    # Before: each timed-out attempt stayed queued and was computed anyway (one query generated 4 times).
    engine = GatedEngine(delay=2.0)
    with serving(create_app(engine, workers=1)) as url:
        cfg = EngineConfig(name="http", endpoint=[url], timeout=0.3, retries=2, backoff=0.05)
        with build_engine(cfg) as remote, pytest.raises(SearchError, match="after 3 attempts"):
            remote.search([SearchRequest("once", k=1)])
        until(lambda: metrics(url)["abandoned"] == 3, what="all three attempts to be seen as abandoned")
        until(lambda: engine.finished == 1, what="the running computation to finish")
        time.sleep(0.2)
    assert engine.seen() == ["once"]


def test_a_full_queue_is_answered_503_with_retry_after():
    engine = GatedEngine()
    with serving(create_app(engine, workers=1, max_pending=2)) as url:
        held: list = []
        threads = [post_in_background(url, {"queries": [f"q{i}"]}, held) for i in range(2)]
        until(lambda: metrics(url)["pending"] == 2, what="two admitted requests")
        r = httpx.post(f"{url}/retrieve", json={"queries": ["one too many"]}, timeout=5)
        assert r.status_code == 503 and "max_pending=2" in r.json()["detail"]
        assert int(r.headers["retry-after"]) >= 1
        engine.gate.set()
        for t in threads:
            t.join(WAIT)
        assert [x.status_code for x in held] == [200, 200]
        m = metrics(url)
    assert m["overloaded"] == 1 and m["errors"] == 0 and "one too many" not in engine.seen()


def test_queue_wait_is_reported_apart_from_compute_time():
    # One worker, held on a gate until all three requests are admitted: the first computes for the whole
    # hold, the other two wait in the queue for it (no dependence on how fast threads start on a busy box).
    engine = GatedEngine()
    with serving(create_app(engine, workers=1)) as url:
        done: list = []
        threads = [post_in_background(url, {"queries": [f"q{i}"]}, done) for i in range(3)]
        deadline = time.monotonic() + WAIT
        while metrics(url)["pending"] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)
        engine.gate.set()
        for t in threads:
            t.join(WAIT)
        m = metrics(url)
    assert [r.status_code for r in done] == [200] * 3
    wait, compute, total = m["queue_wait_ms"], m["compute_ms"], m["latency_ms"]
    assert wait["count"] == compute["count"] == total["count"] == 3
    assert compute["p99"] >= 450 and wait["p99"] >= 450  # the held one computed; the others waited for it
    assert total["p99"] >= wait["p99"]


def test_many_concurrent_requests_still_all_succeed(corpus):
    from zerosearch.engines.bm25 import BM25Engine

    n = 300

    async def fire(url: str) -> list[int]:
        limits = httpx.Limits(max_connections=n)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            rs = await asyncio.gather(*(client.post(f"{url}/retrieve", json={"queries": [f"topic {i % 4}"]})
                                        for i in range(n)))
        return [r.status_code for r in rs]

    with BM25Engine(corpus) as engine, serving(create_app(engine)) as url:
        statuses = asyncio.run(fire(url))
        m = metrics(url)
    assert statuses == [200] * n and (m["errors"], m["rejected"], m["overloaded"], m["requests"]) == (0, 0, 0, n)


# --- 8. lax types, batch window, odd bodies, search exit status, key redaction, stale checkpoints ---------


@pytest.mark.parametrize("path, body, field", [
    ("/retrieve", {"queries": ["q"], "topk": "3"}, "topk"),
    ("/retrieve", {"queries": ["q"], "topk": True}, "topk"),
    ("/retrieve", {"queries": ["q"], "topk": 2.5}, "topk"),  # 2.0 is an integer in JSON Schema, so it is accepted
    ("/retrieve", {"queries": ["q"], "return_scores": "yes"}, "return_scores"),
    ("/retrieve", {"queries": [3]}, "queries.0"),
    ("/search", {"requests": [{"query": "q", "k": "3"}]}, "requests.0.k"),
    ("/search", {"requests": [{"query": "q", "k": True}]}, "requests.0.k"),
    ("/search", {"requests": [{"query": "q", "noise_prob": "0.5"}]}, "requests.0.noise_prob"),
])
def test_lax_types_are_rejected_not_coerced(path, body, field):
    engine = GatedEngine(delay=0)
    r = TestClient(create_app(engine)).post(path, json=body)
    assert r.status_code == 422 and r.json()["detail"].startswith(f"invalid request: {field}:")
    assert engine.calls == []


def test_a_negative_batch_window_is_rejected(corpus, capsys):
    with pytest.raises(ValueError, match="batch_window_ms must be >= 0"):
        create_app(GatedEngine(delay=0), batch_window_ms=-5)
    with pytest.raises(SystemExit) as e:
        main(["serve", "--corpus", str(corpus), "--batch-window-ms", "-5"])
    assert e.value.code == 2 and "must be a finite number >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("body, reason, message", [
    (b'{"queries": ["caf\xe9"]}', "not_utf8", "not valid UTF-8"),
    (b"[" * 50_000 + b"]" * 50_000, "too_deep", "nested too deeply"),
    (b'{"queries": [', "invalid_json", "not valid JSON"),
])
def test_odd_bodies_are_400_and_counted(body, reason, message):
    engine = GatedEngine(delay=0)
    client = TestClient(create_app(engine))
    r = client.post("/retrieve", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and message in r.json()["detail"]
    m = client.get("/metrics").json()
    assert m["rejected"] == 1 and m["rejected_by"] == {reason: 1} and engine.calls == []


def test_search_against_a_dead_endpoint_exits_non_zero_with_the_error(capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    assert main(["search", "q", "--engine", "simulated", "--endpoint", dead, "--answer-blind",
                 "--retries", "0", "--timeout", "2"]) == 2
    captured = capsys.readouterr()
    assert "1 of 1 searches failed" in captured.err and "ConnectError" in captured.err
    assert "No results found." not in captured.out
    assert main(["search", "q", "--engine", "http", "--endpoint", dead, "--retries", "0", "--timeout", "2"]) == 2


KEY = "sk+ab/cd=ef+gh/ij=="  # SerpAPI keys can hold + / =, which travel percent-encoded in the URL


def test_a_serpapi_key_is_redacted_in_every_encoding(monkeypatch, caplog):
    from zerosearch.engines.serpapi import SerpApiEngine

    # raw; percent-encoded keeping "/" (quote's default); fully (= quote_plus, httpx's); lower-case hex
    encodings = [KEY, quote(KEY), quote_plus(KEY), quote_plus(KEY).lower()]
    assert len(set(encodings)) == 4 and quote_plus(KEY) == quote(KEY, safe="")
    echo = " | ".join(encodings)
    caplog.set_level(logging.INFO, logger="httpx")
    monkeypatch.setenv("ZS_TEST_KEY", KEY)
    with FakeServer(lambda m, p, q, b: (401, {"error": f"bad key {echo}"})) as server:
        with SerpApiEngine(api_key_env="ZS_TEST_KEY", endpoints=[server.url], retries=1, backoff=0.01) as engine:
            with pytest.raises(SearchError) as client_error:
                engine.search([SearchRequest("q")])
            server.handler = lambda m, p, q, b: (500, f"upstream failed for {echo}")
            with pytest.raises(SearchError) as server_error:
                engine.search([SearchRequest("q")])
    assert server.requests[0]["query"]["api_key"] == KEY  # the key was sent, and is what must not show
    texts = [str(client_error.value), str(server_error.value)] + [r.getMessage() for r in caplog.records]
    assert len(caplog.records) >= 3
    for text in texts:
        for form in encodings:
            assert form not in text, (form, text)
    assert "***" in texts[0] and "***" in texts[1]


def test_stale_checkpoint_partials_are_removed_on_resume_but_not_while_a_save_runs(tmp_path):
    from zerosearch.training.checkpoint import list_checkpoints

    root = tmp_path / "checkpoints"
    good = root / "step-000005"
    good.mkdir(parents=True)
    (good / "trainer.pt").write_bytes(b"x")

    def partial(name: str) -> Path:
        p = root / name
        p.mkdir()
        (p / "policy.safetensors").write_bytes(b"half")
        return p
    crashed, replaced = partial(".step-000010.k2j3h4.tmp"), partial(".step-000005.old-4242")
    with open(tmp_path / ".checkpoints.lock", "a") as f:  # another process is saving right now: its folder is not stale
        fcntl.flock(f, fcntl.LOCK_EX)
        assert list_checkpoints(tmp_path) == [good] and crashed.exists() and replaced.exists()
        fcntl.flock(f, fcntl.LOCK_UN)
    assert list_checkpoints(tmp_path) == [good]
    assert not crashed.exists() and not replaced.exists() and good.exists()


# --- 5. eval double counting ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_policy():
    from zerosearch.agent.generation import HFBackend
    from zerosearch.models import load

    model, tok = load("tiny-random", seed=0)
    return HFBackend(model.eval(), tok, batch_size=4), tok


def _records():
    from zerosearch.data.qa import QARecord

    return [QARecord(id=f"q{i}", question=f"Who founded town {i}?", golden_answers=[f"F{i}"], data_source="ds")
            for i in range(3)]


def test_a_duplicated_prediction_line_is_refused_with_file_and_line(tiny_policy, tmp_path):
    from zerosearch.evaluation.eval import EvalConfig, run_eval

    backend, tok = tiny_policy
    cfg = EvalConfig(methods=["direct"], answer_tokens=2)
    first = run_eval(_records(), backend, tok, None, cfg, tmp_path)
    assert first["summary"]["direct"]["ds"]["n"] == 3
    again = run_eval(_records(), backend, tok, None, cfg, tmp_path)  # a rerun resumes: nothing counted twice
    pred = tmp_path / "predictions.jsonl"
    assert again["summary"] == first["summary"] and len(pred.read_text().splitlines()) == 3
    with open(pred, "a") as f:  # what a second evaluation appending to the same file wrote
        f.write(pred.read_text().splitlines()[1] + "\n")
    with pytest.raises(ValueError, match=r"predictions.jsonl:4: duplicate prediction for method 'direct', "
                                         r"dataset 'ds', id 'q1' \(first at line 2\)"):
        run_eval(_records(), backend, tok, None, cfg, tmp_path)


def test_two_evaluations_into_one_folder_at_once_are_refused(tiny_policy, tmp_path):
    from zerosearch.evaluation.eval import EvalConfig, run_eval

    backend, tok = tiny_policy
    cfg = EvalConfig(methods=["direct"], answer_tokens=2)
    with open(tmp_path / ".lock", "a") as f:  # held by an evaluation still running
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="another evaluation is writing to"):
            run_eval(_records(), backend, tok, None, cfg, tmp_path)
    assert not (tmp_path / "predictions.jsonl").exists()
    assert run_eval(_records(), backend, tok, None, cfg, tmp_path)["summary"]["direct"]["avg"]["n"] == 3


# --- 6. duplicate passage ids -----------------------------------------------------------------------------


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_corpus_with_duplicate_ids_is_refused_naming_both_lines(tmp_path):
    from zerosearch.engines.bm25 import BM25Engine

    rows = [{"id": "a", "contents": "eiffel tower paris"}, {"id": "b", "contents": "great wall china"},
            {"id": "a", "contents": "eiffel tower paris france"}, {"id": "c", "contents": "mount everest"}]
    corpus = _write(tmp_path / "dup.jsonl", rows)
    with pytest.raises(ValueError, match=r"dup.jsonl:3: duplicate passage id 'a' \(first at .*dup.jsonl:1\)"):
        BM25Engine(corpus)
    with BM25Engine(corpus, duplicate_ids="keep-first") as engine:
        (docs,) = engine.search([SearchRequest("eiffel tower paris france", k=3)])
        assert [d.id for d in docs] == ["a"] and docs[0].text == "eiffel tower paris"
        assert engine.stats()["passages"] == 3 and engine.stats()["duplicates_skipped"] == 1
        assert engine.corpus.doc(2, source="bm25").id == "c"
    # A passage without an id is known by its row number, which must not collide with an explicit id.
    implicit = _write(tmp_path / "implicit.jsonl", [{"id": "1", "contents": "x"}, {"contents": "y"}])
    with pytest.raises(ValueError, match="implicit.jsonl:2: duplicate passage id '1'"):
        BM25Engine(implicit)


# --- 7. non-UTF-8 QA files --------------------------------------------------------------------------------


def test_a_qa_file_with_non_utf8_bytes_names_file_and_line_and_skip_bad_skips_it(tmp_path):
    from zerosearch.data.qa import DataError, ReadReport, read_qa

    good = json.dumps({"id": "1", "question": "q one?", "golden_answers": ["a"]}).encode()
    bad = b'{"id": "2", "question": "caf\xe9?", "golden_answers": ["b"]}'
    path = tmp_path / "qa.jsonl"
    path.write_bytes(good + b"\n" + bad + b"\n" + good.replace(b'"1"', b'"3"') + b"\n")
    with pytest.raises(DataError, match=r"qa\.jsonl: line 2: not valid UTF-8 \(byte 0xe9 at byte 29 of the line"):
        read_qa(path)
    report = ReadReport(str(path))
    assert [r.id for r in read_qa(path, skip_bad=True, report=report)] == ["qa-1", "qa-3"]  # ids get the source
    assert report.skipped == 1 and "line 2: not valid UTF-8" in report.reasons[0]

    whole = tmp_path / "qa.json"
    whole.write_bytes(b'[\n' + good + b",\n" + bad + b"\n]")
    with pytest.raises(DataError, match=r"qa\.json: line 3: not valid UTF-8 \(byte 0xe9 at byte 29 of the line"):
        read_qa(whole)
