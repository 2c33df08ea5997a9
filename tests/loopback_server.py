"""The HTTP server under the tests' stand-ins (COS, TRTC): threaded, and stoppable at once.

`stop()` of a stand-in must not wait for kept-alive connections (the SDKs pool them), so
the server keeps track of its connections and can shut them all down; clients hanging up
is expected, not an error worth a traceback."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from http.server import ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any


class LoopbackHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for kept-alive connections

    def __init__(self, address: tuple[str, int], handler: Any) -> None:
        # Set by the owner while it stops: errors of connections it cuts are expected.
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), which can be slow.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (timeouts, drops, stop()) is expected here; anything else is a bug.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError) and not self.stopping.is_set():
            super().handle_error(request, client_address)
