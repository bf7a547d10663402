"""`zerosearch serve`: expose any search engine over HTTP (/search, /retrieve, /health, /metrics).

`/retrieve` speaks Search-R1's retrieval-server protocol, so `--engine http --endpoint URL` (here, or
Search-R1 itself) can use a zerosearch server: e.g. one BM25 index or one simulator model shared by
several workers. See `zerosearch.engines.server` for the endpoints, limits and backpressure.

Exposure: the server listens on 127.0.0.1 unless told otherwise. A non-loopback `--host` needs a bearer
token (`--token-env NAME`: the token is read from that environment variable, never from the command
line, where `ps` would show it) or an explicit `--insecure`, which prints a warning: an open server in
front of `--engine serpapi` spends its owner's key for anyone who finds the port.
"""

from __future__ import annotations

import argparse
import math

from zerosearch.engines.config import add_engine_arguments

# Server options left unset fall back to create_app's defaults (the numbers in the help texts are
# those; fastapi is not imported here so that `zerosearch --help` stays instant).
_APP_OPTIONS = ("max_k", "max_queries", "batch_window_ms", "max_batch", "max_body_bytes", "max_query_chars",
                "max_pending", "workers")


def _at_least(low: float, kind: type = int):  # type: ignore[no-untyped-def]
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value >= low or (isinstance(value, float) and math.isinf(value)):  # `not >=`: NaN fails too
            raise argparse.ArgumentTypeError(f"must be a finite number >= {low:g}, got {text}")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine_arguments(parser)
    g = parser.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s; a non-loopback one needs --token-env or "
                        "--insecure)")
    g.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0 picks a free one)")
    g.add_argument("--token-env", metavar="NAME",
                   help="require 'Authorization: Bearer <token>', the token read from environment variable NAME")
    g.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback --host without a token (anyone who reaches the port can search)")
    g.add_argument("--max-k", type=_at_least(1), help="largest k a request may ask for (default: 100)")
    g.add_argument("--max-queries", type=_at_least(1), help="most queries in one request, else 413 (default: 256)")
    g.add_argument("--max-body-bytes", type=_at_least(1),
                   help="largest request body, else 413 before it is read (default: 1048576)")
    g.add_argument("--max-query-chars", type=_at_least(1),
                   help="longest query or question in characters, else 422 (default: 2048)")
    g.add_argument("--max-pending", type=_at_least(1),
                   help="search requests admitted at once (queued or computing); more get 503 with Retry-After "
                        "(default: 256 for the simulator, 2048 for other engines)")
    g.add_argument("--workers", type=_at_least(1), help="threads calling the engine when not batching (default: 32)")
    g.add_argument("--batch-window-ms", type=_at_least(0, float),
                   help="merge requests arriving within this many ms into one engine call, 0 never "
                        "(default: 10 for the simulator, 0 for other engines)")
    g.add_argument("--max-batch", type=_at_least(1), help="most queries in one merged engine call (default: 64)")


def read_token(env_name: str | None) -> str | None:
    import os

    from zerosearch.cli import CLIError

    if env_name is None:
        return None
    token = os.environ.get(env_name, "").strip()
    if not token:
        raise CLIError(f"--token-env {env_name}: the environment variable {env_name} is unset or empty")
    return token


def run(args: argparse.Namespace) -> int:
    import sys

    from zerosearch.cli import CLIError
    from zerosearch.engines import EngineConfig, build_engine
    from zerosearch.engines.server import is_loopback, serve

    token = read_token(args.token_env)
    exposed = not is_loopback(args.host)
    if exposed and token is None:
        if not args.insecure:
            raise CLIError(f"--host {args.host} is reachable from other machines: give a bearer token with "
                           "--token-env NAME (the token in environment variable NAME), or --insecure to serve "
                           "without one")
        print(f"zerosearch serve: warning: --insecure: serving on {args.host} without a token; anyone who can "
              "reach this port can use the engine (and spend its API key, if it has one)", file=sys.stderr,
              flush=True)
    cfg = EngineConfig.from_args(args)
    if cfg.name == "self":  # there is no policy here to write the documents: say so now, not per request
        raise CLIError("--engine self needs the policy being trained or evaluated (train, eval, ask, gap); "
                       "a server has none: serve a simulator or a real engine")
    options = {name: getattr(args, name) for name in _APP_OPTIONS if getattr(args, name) is not None}
    with build_engine(cfg) as engine:

        def ready(url: str) -> None:
            auth = f"bearer token from ${args.token_env}" if token else "none"
            print(f"serving {engine.identity()} on {url}", flush=True)
            print(f"  POST {url}/search  POST {url}/retrieve  GET {url}/health  GET {url}/metrics  "
                  f"(auth: {auth}; Ctrl-C stops)", flush=True)

        try:
            serve(engine, args.host, args.port, default_k=cfg.k, on_ready=ready, token=token, insecure=args.insecure,
                  **options)
        except OSError as e:  # address in use, unknown host, no permission for the port
            raise CLIError(f"cannot listen on {args.host}:{args.port}: {e}") from None
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled; for a server that is a normal stop
            pass
        # Also when serve() returns: a Ctrl-C uvicorn handled without re-raising it (seen on a loaded machine,
        # where tests/test_server.py's real run then found no "stopped") is the same normal stop.
        print("zerosearch serve: stopped", file=sys.stderr)
    return 0
