"""The daemon's HTTP endpoints on ``HTTP_PORT``: ``/healthz``, ``/readyz``, ``/metrics``.

The server only moves bytes; what each endpoint answers is decided by the callables it is
given (the daemon's). ``/healthz`` and ``/readyz`` answer JSON, 200 when all is well and 503
with a ``reason`` otherwise; ``/metrics`` is the Prometheus text format.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, dict[str, Any]]]
"""Returns (ok, details): details become the JSON body, with ``status`` added."""
Exposition = Callable[[], tuple[bytes, str]]
"""Returns (body, content type) for /metrics."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], routes: dict[str, Callable[[], tuple[int, bytes, str]]]
    ) -> None:
        self.routes = routes
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]  # type: ignore[assignment]


class _Handler(BaseHTTPRequestHandler):
    server_version = "vspc-etl"
    timeout = 10  # a client that opens a connection and says nothing is dropped

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, head: bool) -> None:
        route = cast(_Server, self.server).routes.get(self.path.split("?", 1)[0].rstrip("/"))
        if route is None:
            status, body, content_type = _json(404, {"error": f"no such endpoint {self.path}"})
        else:
            try:
                status, body, content_type = route()
            except Exception:  # a probe must get an answer, never a dropped connection
                log.exception("the %s endpoint failed", self.path)
                status, body, content_type = _json(500, {"error": "internal error"})
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


def _json(status: int, payload: dict[str, Any]) -> tuple[int, bytes, str]:
    return status, json.dumps(payload).encode(), "application/json"


def _check_route(check: Check) -> Callable[[], tuple[int, bytes, str]]:
    def route() -> tuple[int, bytes, str]:
        ok, details = check()
        return _json(200 if ok else 503, {"status": "ok" if ok else "fail", **details})

    return route


class HealthServer:
    """Serves the endpoints on a background thread; port 0 picks a free port."""

    def __init__(
        self, host: str, port: int, *, health: Check, ready: Check, metrics: Exposition
    ) -> None:
        def exposition() -> tuple[int, bytes, str]:
            body, content_type = metrics()
            return 200, body, content_type

        routes = {
            "/healthz": _check_route(health),
            "/readyz": _check_route(ready),
            "/metrics": exposition,
        }
        self._httpd = _Server((host, port), routes)  # bound now: a taken port fails at start
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread: threading.Thread | None = None

    def start(self) -> HealthServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.25},
            name=f"vspc-etl-http:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()
