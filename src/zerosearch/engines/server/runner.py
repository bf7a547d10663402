"""Running the app with uvicorn: `serve` (the `zerosearch serve` command) and `serving` (tests, benchmarks).

Both bind the socket themselves, so the URL is known before uvicorn starts and a host other machines can
reach is refused without a token before anything is bound.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from zerosearch.engines.base import SearchEngine
from zerosearch.engines.server.app import create_app


def is_loopback(host: str) -> bool:
    """True when every address `host` resolves to is a loopback one (127.0.0.0/8, ::1)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def _listen(host: str, port: int) -> socket.socket:
    """A bound listening socket (port 0: a free one), so the URL is known before uvicorn starts.

    Made with proto=IPPROTO_TCP, which `socket.create_server` leaves at 0: asyncio sets TCP_NODELAY only on
    connections whose socket says TCP, and without it every response after a connection's first waited
    ~40 ms (Nagle's algorithm against the client's delayed ACK).
    """
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         proto=socket.IPPROTO_TCP)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def _url(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(engine: SearchEngine, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "warning",
          on_ready: Callable[[str], None] | None = None, insecure: bool = False, **app_options: Any) -> None:
    """Serve `engine` until interrupted (Ctrl-C / SIGTERM); `on_ready(url)` once the port is bound.

    A host other machines can reach needs `token=...` (see create_app), or `insecure=True`."""
    if not is_loopback(host) and not app_options.get("token") and not insecure:
        raise ValueError(f"host {host!r} is reachable from other machines: serve it with a bearer token, or pass "
                         "insecure=True")
    sock = _listen(host, port)
    app = create_app(engine, **app_options)
    if on_ready is not None:
        on_ready(_url(host, sock))
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False))
    server.run(sockets=[sock])


@contextlib.contextmanager
def serving(app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 10.0) -> Iterator[str]:
    """Run `app` with uvicorn in a background thread (tests, benchmarks); yields its URL, stops on exit."""
    sock = _listen(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="zerosearch-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {_url(host, sock)} did not start within {timeout} s")
            time.sleep(0.01)
        yield _url(host, sock)
    finally:
        server.should_exit = True
        thread.join(timeout=timeout)
        sock.close()
