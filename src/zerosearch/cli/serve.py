"""`zerosearch serve`: expose any search engine over HTTP (/search, /retrieve, /health, /metrics).

`/retrieve` speaks Search-R1's retrieval-server protocol, so `--engine http --endpoint URL` (here, or
Search-R1 itself) can use a zerosearch server: e.g. one BM25 index or one simulator model shared by
several workers. See `zerosearch.engines.server` for the endpoints.
"""

from __future__ import annotations

import argparse

from zerosearch.engines.config import add_engine_arguments

# Server options left unset fall back to create_app's defaults (the numbers in the help texts are
# those; fastapi is not imported here so that `zerosearch --help` stays instant).
_APP_OPTIONS = ("max_k", "max_queries", "batch_window_ms", "max_batch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine_arguments(parser)
    g = parser.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s; 0.0.0.0 for every interface)")
    g.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0 picks a free one)")
    g.add_argument("--max-k", type=int, help="largest k a request may ask for (default: 100)")
    g.add_argument("--max-queries", type=int, help="most queries in one request (default: 256)")
    g.add_argument("--batch-window-ms", type=float,
                   help="merge requests arriving within this many ms into one engine call, 0 never "
                        "(default: 10 for the simulator, 0 for other engines)")
    g.add_argument("--max-batch", type=int, help="most queries in one merged engine call (default: 64)")


def run(args: argparse.Namespace) -> int:
    import sys

    from zerosearch.cli import CLIError
    from zerosearch.engines import EngineConfig, build_engine
    from zerosearch.engines.server import serve

    cfg = EngineConfig.from_args(args)
    options = {name: getattr(args, name) for name in _APP_OPTIONS if getattr(args, name) is not None}
    with build_engine(cfg) as engine:

        def ready(url: str) -> None:
            print(f"serving {engine.identity()} on {url}", flush=True)
            print(f"  POST {url}/search  POST {url}/retrieve  GET {url}/health  GET {url}/metrics  (Ctrl-C stops)",
                  flush=True)

        try:
            serve(engine, args.host, args.port, default_k=cfg.k, on_ready=ready, **options)
        except OSError as e:  # address in use, unknown host, no permission for the port
            raise CLIError(f"cannot listen on {args.host}:{args.port}: {e}") from None
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled; for a server that is a normal stop
            print("zerosearch serve: stopped", file=sys.stderr)
    return 0
