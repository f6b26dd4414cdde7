"""Serve a :class:`~etl.simulator.app.Simulator` over HTTP/1.1 on a background thread
(plain, or TLS when given an ``ssl_context``: the TLS tests use a certificate made by trustme).

The handler only moves bytes: it turns the socket's request into a ``Request``, and writes the
``Response`` back, honouring the transport faults (delay, trickle, reset). Waits are cut short
when the server stops, so a hanging request never holds up :meth:`SimulatorServer.stop`.
``/_sim/...`` control requests (no auth) are answered here; see the package docstring.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import socketserver
import ssl
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from etl.simulator.app import Request, Response, Simulator, error_response, json_response

_log = logging.getLogger(__name__)
_REASONS = {520: "Unknown Error"}
_TRICKLE_CHUNKS = 10


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    timeout = 1.0  # handle_request returns at least this often, to look at ``stopping``

    def __init__(self, address: tuple[str, int], sim: Simulator, family: int) -> None:
        self.address_family = family
        self.sim = sim
        self.stopping = threading.Event()
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    scheme = "http"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up, or refuses our TLS certificate, is routine for a test server.
        _log.debug("connection from %s ended in an error", client_address, exc_info=True)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]  # type: ignore[assignment]

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)

    def drop_connections(self) -> None:
        """Shut every open connection, so idle keep-alive handler threads end now."""
        with self._open_lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "VSPC-Simulator/1.0"
    timeout = 60  # an idle keep-alive connection is closed after this many seconds
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s - %s", self.address_string(), format % args)

    @property
    def _server(self) -> _Server:
        return cast(_Server, self.server)

    def _serve(self, head: bool = False) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        server = self._server
        host = self.headers.get("Host") or f"{server.server_name}:{server.server_port}"
        request = Request(
            method=self.command,
            path=url.path,
            query=parse_qs(url.query, keep_blank_values=True),
            headers={key.lower(): value for key, value in self.headers.items()},
            body=body,
            base_url=f"{server.scheme}://{host}",
        )
        if url.path.rstrip("/").startswith("/_sim"):
            server.sim.stats.count("control")
            response = control(server.sim, request)
        else:
            try:
                response = server.sim.handle(request)
            except Exception:
                _log.exception("simulator failed on %s %s", self.command, self.path)
                response = error_response(520, "The simulator failed.", "unspecified")
        try:
            self._send(response, head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send(self, response: Response, head: bool) -> None:
        stopping = self._server.stopping
        if response.delay and stopping.wait(response.delay):
            self.close_connection = True  # the server is stopping: leave without an answer
            return
        self.send_response(response.status, _REASONS.get(response.status))
        for name, value in response.headers:
            self.send_header(name, value)
            if name.lower() == "connection" and value.lower() == "close":
                self.close_connection = True
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        body = b"" if head else response.body
        if response.reset:
            self.wfile.write(body[: len(body) // 2])
            self._reset()
        elif response.trickle and body:
            step = -(-len(body) // _TRICKLE_CHUNKS)
            for start in range(0, len(body), step):
                self.wfile.write(body[start : start + step])
                self.wfile.flush()
                if stopping.wait(response.trickle / _TRICKLE_CHUNKS):
                    self.close_connection = True
                    return
        else:
            self.wfile.write(body)

    def _reset(self) -> None:
        """Close with a TCP reset (SO_LINGER 0) instead of an orderly shutdown."""
        self.wfile.flush()
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.wfile.close()
        self.connection.close()


def control(sim: Simulator, request: Request) -> Response:
    """Answer a ``/_sim/...`` request: steer the simulator from another process."""
    name = request.path.rstrip("/")[len("/_sim") :]
    route = (request.method, name)
    try:
        if route == ("POST", "/advance"):
            hours = float(request.query.get("hours", ["24"])[0])
            return json_response(200, sim.advance(hours).as_dict())
        if route == ("POST", "/touch"):
            fraction = float(request.query.get("fraction", ["0.1"])[0])
            return json_response(200, {"changed": len(sim.world.touch(fraction))})
        if route == ("POST", "/faults"):
            spec = json.loads(request.body or b"{}")
            if not isinstance(spec, dict):
                raise ValueError("the body must be a JSON object")
            if spec.get("clear"):
                sim.faults.clear()
            elif "random" in spec:
                sim.faults.random(**spec["random"])
            else:
                sim.faults.add(spec.pop("kind"), **spec)
            return json_response(200, {"ok": True, "pending": sim.faults.pending})
        if route == ("GET", "/jobs"):
            platform = request.query.get("platform", ["windows"])[0]
            return json_response(200, {"now": sim.now.isoformat(), "data": sim.jobs(platform)})
        if route == ("GET", "/stats"):
            return json_response(200, {"now": sim.now.isoformat(), **sim.stats.snapshot()})
    except (ValueError, TypeError, KeyError) as exc:
        return json_response(400, {"error": f"{type(exc).__name__}: {exc}"})
    return json_response(404, {"error": f"no control endpoint {request.method} {request.path}"})


class SimulatorServer:
    """A :class:`Simulator` listening on ``host:port`` (port 0: any free port) until stopped.

    The socket is bound at construction, so :attr:`url` is known (and a taken port fails)
    before :meth:`start`. Use it as a context manager to start and stop it. With
    ``ssl_context`` (a server-side context holding a certificate) it speaks HTTPS.
    """

    def __init__(
        self,
        sim: Simulator,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sim = sim
        self._httpd = _Server((host, port), sim, family)
        if ssl_context is not None:
            # The handshake runs in the handler thread (on first read), so a client that
            # refuses the certificate never holds up the accept loop.
            self._httpd.socket = ssl_context.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
            self._httpd.scheme = "https"
        self._thread: threading.Thread | None = None
        self.host = host
        self.port = int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The base URL a client configures as ``VSPC_URL``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self._httpd.scheme}://{host}:{self.port}"

    def start(self) -> SimulatorServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._serve, name=f"vspc-simulator:{self.port}", daemon=True
            )
            self._thread.start()
        return self

    def _serve(self) -> None:
        # Not serve_forever: its shutdown() waits out a poll interval, and tests stop often.
        while not self._httpd.stopping.is_set():
            self._httpd.handle_request()

    def stop(self) -> None:
        """Stop serving, end open connections and pending waits, release the port."""
        self._httpd.stopping.set()
        if self._thread is not None:
            with contextlib.suppress(OSError):  # wake handle_request up at once
                socket.create_connection((self.host, self.port), timeout=0.5).close()
            self._thread.join()
            self._thread = None
        self._httpd.drop_connections()
        self._httpd.server_close()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
