"""Schema-driven fuzzing of every HTTP server in zerosearch, from the server's own OpenAPI document.

The package has one HTTP server, `zerosearch.engines.server.create_app` (what `zerosearch serve` runs),
fuzzed here in the three shapes it is deployed in:

- `engine`: a real engine, BM25 over a small synthetic-world corpus (no batching, worker threads);
- `engine-token`: the same behind a bearer token (`--token-env`); the schema declares the scheme, every
  generated request carries the token and is sent again without it or with a wrong one, which must be
  401 whatever the body (those probes are counted in `requests_sent`, not in `requests_generated`);
- `simulator`: the gold-aware simulator (`SimulatedEngine`, leak guard on, the server's micro-batcher),
  as training serves it, over a stand-in backend that copies the fuzzed query (and the gold answer) into
  "Doc N:" documents, so what the fuzzer sends goes through the prompt, the document parser and the leak
  guard; `simulator-blind`: the answer-blind one, as evaluation serves it.

Each server runs uvicorn on 127.0.0.1 (a free port); Schemathesis loads `GET /openapi.json` from it and
generates requests with Hypothesis (its Python API: `operation.as_strategy(mode)`):

1. stateless: positive (schema-valid) and negative (schema-violating) bodies for /search and /retrieve,
   and /health and /metrics; every response goes through Schemathesis's checks (no 5xx, status code,
   content type, headers and body as documented, negative data rejected, positive data accepted; for the
   gold-aware simulator a positive request may be refused only for what the schema cannot say: a
   non-empty query without its question and gold answer, a 422 naming that);
2. stateful: a Hypothesis state machine sends the same generated requests in any order and, after every
   step, checks the server's own state against what the clients saw: /metrics' requests, queries,
   rejected (and by reason) and errors counters, and nothing left pending. (Schemathesis's own stateful
   phase follows OpenAPI links between operations; this API creates no resource, so it has none.)
3. undocumented methods on each path are 405 with an Allow header;

and afterwards the server must answer a normal search (200, documents), with no exception logged by
uvicorn ("no crash"). Failures are collected, not raised (`raise_failures=False`), so one run reports
them all: the distinct (server, operation, check) triples with one example each.

    python bench/fuzz.py [--examples 5000] [--seed 0] [--servers engine,engine-token,simulator]

Prints one JSON line: per server the requests generated, requests sent, responses by status class,
failures; and the totals. tests/test_fuzz_servers.py runs the same code with a few hundred examples.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engines import world_corpus  # noqa: E402  (bench/ is not a package)

from zerosearch.engines.bm25 import BM25Engine  # noqa: E402
from zerosearch.engines.server import create_app, serving  # noqa: E402
from zerosearch.engines.sim_backends import Generation  # noqa: E402
from zerosearch.engines.sim_prompts import prompt_answer  # noqa: E402
from zerosearch.engines.simulated import SimulatedEngine  # noqa: E402

SERVERS = ("engine", "engine-token", "simulator", "simulator-blind")
TOKEN = "fuzz-token-0123456789"
SEARCH_OPS = (("/search", "POST"), ("/retrieve", "POST"))
OTHER_OPS = (("/health", "GET"), ("/metrics", "GET"))
# The share of `examples` for each search operation and mode (stateless).
SHARES = {("/search", "positive"): 0.35, ("/search", "negative"): 0.25, ("/retrieve", "positive"): 0.22,
          ("/retrieve", "negative"): 0.18}
STATEFUL_SHARE = 0.15  # on top: the state machine's steps (Hypothesis picks each run's length, <= STATEFUL_STEPS)
STATEFUL_STEPS = 25  # steps per state-machine run
# 413 answers a request with more than max_queries queries (a negative case past maxItems): documented, so
# accepted as the rejection it is, beside Schemathesis's default list.
NEGATIVE_STATUSES = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
GOLD_REFUSAL = "has no question and gold answer"


class EchoSimBackend:
    """A simulator backend without a model: for each prompt, "Doc N:" documents that copy the query (and,
    in useful mode, state the gold answer from the prompt), so fuzzed text reaches the document parser."""

    _query = re.compile(r"\nQuery: (.*)\n(Useful|Noisy) Output:\n\Z", re.S)
    _answer = re.compile(r"whose answer is (.*?)\.\n", re.S)

    def identity(self) -> str:
        return "echo"

    def generate(self, prompts: Any, stop: Any = (), prefix: str = "") -> list[Generation]:
        out = []
        for p in prompts:
            m = self._query.search(p)
            query, mode = (m.group(1), m.group(2)) if m else (p[-50:], "Useful")
            a = self._answer.search(p)
            answer = a.group(1) if a and mode == "Useful" else "something else"
            out.append(Generation(f"Doc 1: {query}\nDoc 2: (Title: {query[:20]}) {query} is {answer}.\n"
                                  f"Doc 3: {mode} text about {query}", "stop"))
        return out

    def stats(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


@contextlib.contextmanager
def server(name: str, folder: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """(url, headers every request needs) of server `name` running on 127.0.0.1 until the block ends."""
    if name not in SERVERS:
        raise ValueError(f"unknown server {name!r}; choose from {SERVERS}")
    if name.startswith("simulator"):
        engine: Any = SimulatedEngine(EchoSimBackend(), k=5, leak_guard="flag", answer_blind=name == "simulator-blind")
        app = create_app(engine)
    else:
        corpus = folder / "world" / "corpus.jsonl"
        if not corpus.exists():
            world_corpus(corpus.parent, 0.05)
        engine = BM25Engine(corpus, index_dir=str(folder / "index"))
        app = create_app(engine, token=TOKEN if name == "engine-token" else None)
    headers = {"Authorization": f"Bearer {TOKEN}"} if name == "engine-token" else {}
    try:
        with serving(app) as url:
            yield url, headers
    finally:
        engine.close()


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


def _lacks_gold_context(case: schemathesis.Case) -> bool:
    """True when the gold-aware simulator must refuse this (schema-valid) request: some non-empty query
    comes without a question and a gold answer (SimulatedEngine._context)."""
    body = case.body if isinstance(case.body, dict) else {}
    if case.path == "/retrieve":
        return any(isinstance(q, str) and q.strip() for q in body.get("queries", []))
    return any(isinstance(r, dict) and isinstance(r.get("query"), str) and r["query"].strip()
               and (not (r.get("question") or "").strip() or prompt_answer(r.get("golden_answers")) is None)
               for r in body.get("requests", []))


def gold_aware_acceptance(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """positive_data_acceptance for the gold-aware simulator: a schema-valid request is answered 2xx,
    except a 422 naming the missing question/answer when the request really lacks them."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or 200 <= response.status_code < 300:
        return None
    detail = ""
    with contextlib.suppress(Exception):
        detail = response.json().get("detail", "")
    if response.status_code == 422 and GOLD_REFUSAL in detail and _lacks_gold_context(case):
        return None
    raise AssertionError(f"schema-valid request rejected with {response.status_code}: {detail[:300]}")


@dataclass
class Report:
    server: str
    generated: int = 0  # requests built from generated cases (each sent once)
    sent: int = 0  # every HTTP request, probes and /metrics reads of the state machine included
    by_class: collections.Counter[str] = field(default_factory=collections.Counter)
    by_operation: dict[str, collections.Counter[str]] = field(default_factory=dict)
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)  # "op check" -> first example, count
    crashes: list[str] = field(default_factory=list)
    after_ok: bool = False
    seconds: float = 0.0

    def fail(self, key: str, message: str, curl: str = "") -> None:
        entry = self.failures.setdefault(key, {"count": 0, "message": message[:600], "reproduce": curl[:1500]})
        entry["count"] += 1

    def summary(self) -> dict[str, Any]:
        return {"requests_generated": self.generated, "requests_sent": self.sent,
                "responses_by_class": dict(sorted(self.by_class.items())),
                "generated_by_operation": {k: dict(sorted(v.items())) for k, v in sorted(self.by_operation.items())},
                "failures": len(self.failures), "failure_details": self.failures, "crashes": self.crashes,
                "normal_request_after": self.after_ok, "seconds": round(self.seconds, 1)}


class _ErrorLog(logging.Handler):
    """Collects what uvicorn and the app log at ERROR: an exception escaping the app is a crash."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record)[-2000:])


class Fuzzer:
    """Sends Schemathesis cases to one running server and records everything in `report`."""

    def __init__(self, name: str, url: str, headers: dict[str, str], *, raise_failures: bool):
        self.url, self.headers, self.raise_failures = url, dict(headers), raise_failures
        self.report = Report(name)
        config = schemathesis.Config()
        self.schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config, headers=dict(headers),
                                                    timeout=10)
        self.schema.config.generation.update(with_security_parameters=False)
        self.schema.config.checks.negative_data_rejection.expected_statuses = NEGATIVE_STATUSES
        self.log: list[tuple[str, str, int, str, int]] | None = None
        self.session = requests.Session()
        self.session.hooks["response"].append(self._count)
        # ignored_auth sends its probes on a session of its own, which nothing here could count: the token
        # server gets its own probes instead (`_probe_auth`), through this session.
        self.checks = [c for c in CHECKS.get_all() if c.__name__ != "ignored_auth"
                       and not (name == "simulator" and c.__name__ == "positive_data_acceptance")]
        self.auth_probes = 0
        if name == "simulator":
            self.checks.append(gold_aware_acceptance)

    def _count(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.report.sent += 1
        self.report.by_class[_status_class(response.status_code)] += 1
        if self.log is not None:  # the state machine's record of every answer, auth probes too
            detail = ""
            if response.status_code >= 400:
                with contextlib.suppress(Exception):
                    detail = str(response.json().get("detail", ""))
            path = requests.utils.urlparse(response.request.url).path
            self.log.append((response.request.method, path, response.status_code, detail,
                             _n_queries(path, response.request.body)))

    def strategy(self, path: str, method: str, mode: GenerationMode) -> Any:
        return self.schema[path][method].as_strategy(generation_mode=mode)

    def send(self, case: schemathesis.Case) -> requests.Response | None:
        """Send one generated case and run the checks; a failure is raised or recorded."""
        mode = case.meta.generation.mode.value if case.meta is not None else "explicit"
        self.report.generated += 1
        self.report.by_operation.setdefault(f"{case.method} {case.path}", collections.Counter())[mode] += 1
        try:
            response = case.call_and_validate(base_url=self.url, session=self.session,
                                              headers=self.headers or None, checks=self.checks, timeout=30)
            if self.headers:
                self._probe_auth(case)
            return response
        except (Exception, BaseExceptionGroup) as e:  # noqa: B036  (schemathesis's FailureGroup)
            if self.raise_failures:
                raise
            subs = e.exceptions if isinstance(e, BaseExceptionGroup) else (e,)
            curl = ""
            with contextlib.suppress(Exception):
                curl = case.as_curl_command(headers=self.headers)
            for sub in subs:
                title = getattr(sub, "title", None) or type(sub).__name__
                self.report.fail(f"{case.method} {case.path} [{mode}] {title}", str(sub), curl)
            return None

    def _probe_auth(self, case: schemathesis.Case) -> None:
        """The same request without the token, or with a wrong one (every other case): 401 as documented,
        whatever the body, before anything reads it."""
        self.auth_probes += 1
        wrong = {"Authorization": f"Bearer {TOKEN}x"} if self.auth_probes % 2 else {}
        kwargs = case.as_transport_kwargs(base_url=self.url, headers=wrong)
        if not wrong:
            kwargs["headers"].pop("Authorization", None)
        kwargs.pop("session", None)
        response = self.session.request(**kwargs, timeout=30)
        if response.status_code != 401 or response.headers.get("www-authenticate") != "Bearer":
            raise AssertionError(f"request {'with a wrong' if wrong else 'without a'} token: "
                                 f"{response.status_code}, want 401 with WWW-Authenticate: Bearer")
        case.validate_response(response, checks=[c for c in self.checks if c.__name__ in (
            "status_code_conformance", "content_type_conformance", "response_schema_conformance")])

    # --- the parts of a run -----------------------------------------------------------------------

    def stateless(self, path: str, method: str, mode: GenerationMode, examples: int, hypothesis_seed: int | None
                  ) -> None:
        if examples < 1:
            return

        @settings(max_examples=examples, deadline=None, database=None, derandomize=hypothesis_seed is None,
                  phases=[Phase.explicit, Phase.generate, Phase.shrink] if self.raise_failures else [Phase.generate],
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                         HealthCheck.data_too_large])
        @given(case=self.strategy(path, method, mode))
        def test(case: schemathesis.Case) -> None:
            self.send(case)

        if hypothesis_seed is not None:
            test = seed(hypothesis_seed)(test)
        try:
            test()
        except Unsatisfiable:  # e.g. no negative request for an operation without parameters: nothing to send
            pass

    def stateful(self, runs: int, hypothesis_seed: int | None) -> None:
        if runs < 1:
            return
        fuzzer = self
        strategies = {(p, mode.value): self.strategy(p, m, mode) for p, m in SEARCH_OPS
                      for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)}
        cases = st.one_of(*strategies.values())

        class ServerState(RuleBasedStateMachine):
            """The server's counters against a model of what every response implied."""

            def __init__(self) -> None:
                super().__init__()
                fuzzer.log = None
                self.base = fuzzer.metrics()
                self.expect: collections.Counter[str] = collections.Counter()
                fuzzer.log = []

            @rule(case=cases)
            def search(self, case: schemathesis.Case) -> None:
                fuzzer.send(case)

            def expected(self) -> None:
                """What the answers seen since the last check imply for the server's counters."""
                for method, path, status, detail, n in fuzzer.log or ():
                    if (method, path) not in (("POST", "/search"), ("POST", "/retrieve")):
                        self.expect.update(rejected=int(400 <= status < 500))  # 401, 405
                    elif status == 200:
                        self.expect.update(requests=1, queries=n)
                    elif status == 502:
                        self.expect.update(requests=1, queries=n, errors=1)
                    elif 400 <= status < 500:
                        self.expect.update(rejected=1)
                        if status == 422 and GOLD_REFUSAL in detail:  # the engine refused it: a request too
                            self.expect.update(requests=1, queries=n, engine_refused=1)
                fuzzer.log = []

            @invariant()
            def counters_match(self) -> None:
                self.expected()
                now = fuzzer.metrics()
                seen = {k: now[k] - self.base[k] for k in ("requests", "queries", "rejected", "errors")}
                want = {k: self.expect[k] for k in seen}
                refused = now["rejected_by"].get("engine_refused", 0) - self.base["rejected_by"].get(
                    "engine_refused", 0)
                problems = []
                if seen != want:
                    problems.append(f"/metrics counters moved by {seen}, the responses imply {want}")
                if refused != self.expect["engine_refused"]:
                    problems.append(f"engine_refused {refused} != {self.expect['engine_refused']}")
                if now["pending"] != 0:
                    problems.append(f"{now['pending']} requests still pending between requests")
                if sum(now["rejected_by"].values()) != now["rejected"]:
                    problems.append(f"rejected_by {now['rejected_by']} does not add up to rejected={now['rejected']}")
                if problems:
                    message = "; ".join(problems)
                    if fuzzer.raise_failures:
                        raise AssertionError(message)
                    fuzzer.report.fail("stateful /metrics", message)
                    self.base, self.expect = now, collections.Counter()  # go on from the server's state
                fuzzer.log = []  # (the /metrics read just made)

        ServerState.TestCase.settings = settings(
            max_examples=runs, stateful_step_count=STATEFUL_STEPS, deadline=None, database=None,
            derandomize=hypothesis_seed is None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
        try:
            run_state_machine_as_test(ServerState if hypothesis_seed is None else seed(hypothesis_seed)(ServerState),
                                      settings=ServerState.TestCase.settings)
        finally:
            self.log = None

    def metrics(self) -> dict[str, Any]:
        r = self.session.get(f"{self.url}/metrics", headers=self.headers, timeout=30)
        r.raise_for_status()
        return r.json()

    def methods(self) -> None:
        """Each documented path answers the methods it does not list with 405 and an Allow header."""
        for path, method in (*SEARCH_OPS, *OTHER_OPS):
            for other in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                if other == method:
                    continue
                r = self.session.request(other, f"{self.url}{path}", headers=self.headers, timeout=30)
                if r.status_code != 405 or method not in r.headers.get("allow", ""):
                    message = f"{other} {path}: {r.status_code}, allow={r.headers.get('allow')!r}; want 405"
                    if self.raise_failures:
                        raise AssertionError(message)
                    self.report.fail(f"{other} {path} unsupported method", message)

    def normal_request(self) -> bool:
        body = {"requests": [{"query": "Who founded the company?", "k": 3, "row_id": "after",
                              "question": "Who founded the company?", "golden_answers": ["someone"]}]}
        r = self.session.post(f"{self.url}/search", json=body, headers=self.headers, timeout=30)
        h = self.session.get(f"{self.url}/health", headers=self.headers, timeout=30)
        return r.status_code == 200 and len(r.json()["results"]) == 1 and bool(r.json()["results"][0]) \
            and h.status_code == 200 and h.json()["status"] == "ok"


def _n_queries(path: str, raw: bytes | str | None) -> int:
    """The number of queries a request body sent (0 when it is no JSON object with that list)."""
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        return 0
    items = body.get("requests" if path == "/search" else "queries") if isinstance(body, dict) else None
    return len(items) if isinstance(items, list) else 0


def fuzz_server(name: str, folder: Path, *, examples: int, hypothesis_seed: int | None = None,
                raise_failures: bool = False, parts: tuple[str, ...] = ("stateless", "stateful", "methods")
                ) -> Report:
    """Fuzz server `name` with about `examples` generated requests; `hypothesis_seed` None: derandomized."""
    log = _ErrorLog()
    loggers = [logging.getLogger(n) for n in ("uvicorn.error", "uvicorn", "fastapi", "zerosearch")]
    for lg in loggers:
        lg.addHandler(log)
    t0 = time.perf_counter()
    try:
        with server(name, folder) as (url, headers):
            fuzzer = Fuzzer(name, url, headers, raise_failures=raise_failures)
            if "stateless" in parts:
                for path, method in SEARCH_OPS:
                    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                        fuzzer.stateless(path, method, mode, round(examples * SHARES[(path, mode.value)]),
                                         hypothesis_seed)
                for path, method in OTHER_OPS:  # no parameters: Hypothesis sees every request after one
                    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                        fuzzer.stateless(path, method, mode, 5, hypothesis_seed)
            if "stateful" in parts:
                fuzzer.stateful(max(1, round(examples * STATEFUL_SHARE / STATEFUL_STEPS)), hypothesis_seed)
            if "methods" in parts:
                fuzzer.methods()
            fuzzer.report.after_ok = fuzzer.normal_request()
    finally:
        for lg in loggers:
            lg.removeHandler(log)
    fuzzer.report.crashes = log.records
    fuzzer.report.seconds = time.perf_counter() - t0
    return fuzzer.report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=5000, help="generated requests per server (about)")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis seed (the run is reproducible)")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated, from " + ", ".join(SERVERS))
    args = parser.parse_args(argv)
    names = [s for s in args.servers.split(",") if s]
    t0 = time.perf_counter()
    out: dict[str, Any] = {"bench": "fuzz", "schemathesis": schemathesis.__version__, "seed": args.seed,
                           "examples_per_server": args.examples, "python": platform.python_version(),
                           "cpus": os.cpu_count(), "servers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("ZEROSEARCH_CACHE", str(Path(tmp) / "cache"))
        for name in names:
            report = fuzz_server(name, Path(tmp), examples=args.examples, hypothesis_seed=args.seed)
            out["servers"][name] = report.summary()
            print(f"fuzz: {name}: {report.generated} generated, {report.sent} sent, {dict(report.by_class)}, "
                  f"{len(report.failures)} failures, {report.seconds:.0f} s", file=sys.stderr, flush=True)
    servers = out["servers"].values()
    out["total"] = {"requests_generated": sum(s["requests_generated"] for s in servers),
                    "requests_sent": sum(s["requests_sent"] for s in servers),
                    "responses_5xx": sum(s["responses_by_class"].get("5xx", 0) for s in servers),
                    "failures": sum(s["failures"] for s in servers), "crashes": sum(len(s["crashes"]) for s in servers),
                    "all_answered_after": all(s["normal_request_after"] for s in servers),
                    "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out))
    ok = out["total"]["failures"] == 0 and out["total"]["crashes"] == 0 and out["total"]["all_answered_after"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
