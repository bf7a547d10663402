"""Fakes for engine tests: threaded HTTP servers on 127.0.0.1 (on a free port), and the no-op part of a
simulator backend (zerosearch.engines.sim_backends.SimBackend)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

# (method, path, query params, JSON body or None) -> (status, JSON answer)
Handler = Callable[[str, str, dict[str, str], Any], tuple[int, Any]]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is what some tests are about, not a failure


class FakeServer:
    """`with FakeServer(handler) as s:` serves on `s.url` and records every request in `s.requests`."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.requests: list[dict[str, Any]] = []
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append({"method": self.command, "path": parts.path, "query": query, "body": body,
                                      "headers": dict(self.headers)})
                status, answer = fake.handler(self.command, parts.path, query, body)
                data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

        self._server = _QuietServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def search_r1_handler(method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
    """A Search-R1 retrieval server whose documents spell out the query they answer."""
    if (method, path) != ("POST", "/retrieve"):
        return 404, {"detail": "Not Found"}
    result = [[{"document": {"id": f"{q}-{i}", "contents": f'"Title {i}"\nabout {q}'}, "score": 10.0 - i}
               for i in range(body["topk"])] for q in body["queries"]]
    return 200, {"result": result}


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return port


class StatelessSimBackend:
    """A simulator backend's bookkeeping with nothing to keep: subclasses write `generate` (and `identity`)."""

    def stats(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def logprob_atol(cpu_atol: float) -> float:
    """The tolerance for "the same log-probs from two batch shapes": `cpu_atol` on a CPU; on CUDA, fp32
    matrix products of different shapes differ by up to ~3e-3 in a log-prob (measured on an H200, torch
    2.11, transformers 5.17: the kernels' own rounding), so 1e-2 there."""
    import torch

    return max(cpu_atol, 1e-2) if torch.cuda.is_available() else cpu_atol
