"""A byte-counting TCP forwarder on loopback, for tests that need to cut a transfer midway."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target_port`` and counts bytes sent by clients.

    ``on_upstream_bytes(total)`` is called after each forwarded client chunk; a test uses it
    to kill the client once enough of an upload has passed.
    """

    def __init__(
        self, target_port: int, on_upstream_bytes: Callable[[int], None] | None = None
    ) -> None:
        self.target_port = target_port
        self.on_upstream_bytes = on_upstream_bytes
        self.upstream_bytes = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counts: bool) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if counts:
                    with self._lock:
                        self.upstream_bytes += len(data)
                        total = self.upstream_bytes
                    if self.on_upstream_bytes:
                        self.on_upstream_bytes(total)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self._closed = True
        self._server.close()
