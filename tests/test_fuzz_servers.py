"""Schema-driven fuzzing of the HTTP server (Schemathesis, bench/fuzz.py), short, and what it found.

The fuzz runs bench/fuzz.py's code on each of its servers (BM25, BM25 behind a token, the gold-aware and
the answer-blind simulator) on 127.0.0.1, a free port, with a few hundred generated requests each,
derandomized (the same requests every run), failures raised so Hypothesis shrinks them to a minimal
request. The long run (>= 5,000 requests per server) is `python bench/fuzz.py`; its figures are in
docs/results/reliability.md. The other tests pin what the fuzzing found, one each.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from zerosearch.engines.base import Document, SearchEngine
from zerosearch.engines.server import create_app
from zerosearch.engines.simulated import SimulatedEngine

_PATH = Path(__file__).resolve().parents[1] / "bench" / "fuzz.py"
_spec = importlib.util.spec_from_file_location("zerosearch_bench_fuzz", _PATH)
fuzz = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fuzz
_spec.loader.exec_module(fuzz)

EXAMPLES = 200  # per server; the stateless part sends this many, the state machine up to 15% more


@pytest.mark.parametrize("name", fuzz.SERVERS)
def test_short_fuzz_finds_nothing_and_the_server_still_answers(name, tmp_path, monkeypatch):
    monkeypatch.setenv("ZEROSEARCH_CACHE", str(tmp_path / "cache"))
    report = fuzz.fuzz_server(name, tmp_path, examples=EXAMPLES, raise_failures=True)
    assert report.failures == {} and report.crashes == []
    assert report.after_ok  # a normal search (200, documents) and /health after the fuzzing
    assert report.generated >= EXAMPLES and "5xx" not in report.by_class
    ops = report.by_operation
    assert ops["POST /search"]["positive"] and ops["POST /search"]["negative"] and ops["POST /retrieve"]["negative"]
    assert report.by_class["2xx"] > 0 and report.by_class["4xx"] > 0


class Echo(SearchEngine):
    name = "echo"

    def search(self, requests):
        return [[Document(title="t", text=f"k={r.k}", source="echo", id=str(i)) for i in range(r.k)]
                for r in requests]


def test_openapi_document_states_this_servers_limits_errors_and_auth():
    # Found by the fuzzer: FastAPI's stock document promised a 422 body `{"detail": [{loc, msg, ...}]}`
    # (the server sends one line), left out 400/413/502/503, and no limit (max_k, max_queries,
    # max_query_chars), so schema-valid requests were refused.
    doc = TestClient(create_app(Echo(), max_k=7, max_queries=3, max_query_chars=50)).get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    item, body = schemas["SearchItem"]["properties"], schemas["RetrieveBody"]["properties"]
    assert item["k"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 7}
    assert body["topk"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 7}
    assert schemas["SearchBody"]["properties"]["requests"]["maxItems"] == 3 and body["queries"]["maxItems"] == 3
    assert item["query"]["maxLength"] == 50 and body["queries"]["items"]["maxLength"] == 50
    search = doc["paths"]["/search"]["post"]["responses"]
    assert sorted(search) == ["200", "400", "413", "422", "502", "503"]
    assert search["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert "Retry-After" in search["503"]["headers"]
    assert sorted(doc["paths"]["/health"]["get"]["responses"]) == ["200", "400", "413"]
    assert "security" not in doc

    client = TestClient(create_app(Echo(), token="s3cret"))
    assert client.get("/openapi.json").status_code == 401
    doc = client.get("/openapi.json", headers={"Authorization": "Bearer s3cret"}).json()
    assert doc["security"] == [{"bearer": []}] and "401" in doc["paths"]["/retrieve"]["post"]["responses"]


def test_an_integral_json_number_is_an_integer():
    # Found by the fuzzer (ST202, schema-valid request rejected): `"k": 48.0` is an integer to JSON Schema,
    # and was 422 here; a fraction, a string or a bool still is.
    client = TestClient(create_app(Echo()))
    r = client.post("/search", json={"requests": [{"query": "q", "k": 3.0}]})
    assert r.status_code == 200 and [d["text"] for d in r.json()["results"][0]] == ["k=3"] * 3
    r = client.post("/retrieve", json={"queries": ["q"], "topk": 2.0})
    assert r.status_code == 200 and len(r.json()["result"][0]) == 2
    for bad in (3.5, "3", True, 0.0, 1e300):
        r = client.post("/retrieve", json={"queries": ["q"], "topk": bad})
        assert r.status_code == 422, bad
    assert "max_k" in client.post("/retrieve", json={"queries": ["q"], "topk": 1e300}).json()["detail"]


def _raw(body: dict) -> dict:
    # ensure_ascii: a lone surrogate travels as a `\udc00` escape, which JSON allows
    return {"content": json.dumps(body, ensure_ascii=True), "headers": {"content-type": "application/json"}}


def test_a_lone_surrogate_is_a_clear_422_not_a_500():
    # Found by the property test below: `"query": "\udc00"` reached the simulator, which echoes the query
    # into its documents (as models do), and the response could not be encoded: 500 Internal Server Error.
    client = TestClient(create_app(SimulatedEngine(fuzz.EchoSimBackend(), answer_blind=True)),
                        raise_server_exceptions=False)
    r = client.post("/retrieve", **_raw({"queries": ["fine", "bad \udc00 one"]}))
    assert r.status_code == 422
    assert r.json()["detail"] == "queries.1 is not valid Unicode: lone surrogate U+DC00 at character 4"
    for field, value in (("row_id", "r\ud800"), ("question", "\udfff?"), ("golden_answers", ["ok", "\udbff"])):
        r = client.post("/search", **_raw({"requests": [{"query": "q", field: value}]}))
        assert r.status_code == 422 and "lone surrogate" in r.json()["detail"], field
    assert client.post("/retrieve", **_raw({"queries": ["a valid pair \U0001F600"]})).status_code == 200
    assert client.get("/metrics").json()["rejected_by"]["invalid_unicode"] == 4


# Any code point, lone surrogates made as likely as the rest; numbers valid half the time, so that a bad
# string is often the only thing wrong with a request.
_any_text = st.lists(st.one_of(st.characters(categories=["Cs"]), st.characters(), st.sampled_from("ab \n")),
                     max_size=10).map("".join)
_numbers = st.one_of(st.integers(1, 100), st.integers(-3, 10**20), st.floats(allow_nan=True, allow_infinity=True))
_items = st.fixed_dictionaries({"query": _any_text}, optional={
    "k": _numbers, "row_id": _any_text, "question": _any_text, "golden_answers": st.lists(_any_text, max_size=3),
    "mode": st.sampled_from(["useful", "noisy", "loud"]), "noise_prob": _numbers})
_bodies = st.one_of(
    st.fixed_dictionaries({"requests": st.lists(_items, max_size=4)}).map(lambda b: ("/search", b)),
    st.fixed_dictionaries({"queries": st.lists(_any_text, max_size=4)},
                          optional={"topk": _numbers, "return_scores": st.booleans()}).map(lambda b: ("/retrieve", b)))


@pytest.fixture(scope="module")
def simulators():
    """Both simulator servers, in process (their batcher threads stop with the module)."""
    with contextlib.ExitStack() as stack:
        yield {blind: stack.enter_context(TestClient(create_app(SimulatedEngine(fuzz.EchoSimBackend(),
                                                                                 answer_blind=blind)),
                                                     raise_server_exceptions=False))
               for blind in (False, True)}


@pytest.mark.parametrize("blind", [False, True], ids=["gold", "blind"])
@settings(max_examples=150)
@given(request=_bodies)
def test_any_text_and_any_number_in_any_field_is_never_a_5xx(simulators, blind, request):
    # What Schemathesis does not generate: surrogates (JSON escapes allow them) and NaN/Infinity (Python's
    # json reads them), in every field of both search routes, at both simulators (which echo the query).
    path, body = request
    r = simulators[blind].post(path, content=json.dumps(body, ensure_ascii=True, allow_nan=True),
                               headers={"content-type": "application/json"})
    assert r.status_code in (200, 413, 422), r.text[:300]
    if r.status_code != 200:
        assert isinstance(r.json()["detail"], str)
