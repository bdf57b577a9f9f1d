"""A fault-injecting HTTP proxy on loopback, in front of fake-gcs-server.

Every request is forwarded to the real emulator unless a :class:`Rule` picks it for a fault:

- ``"429"``, ``"503"``: answered at once with that status (the request never reaches GCS);
- ``"403"``, ``"404"``: the same, for persistent faults (a bucket gone, access revoked);
- ``"reset-request"``: the request is read but not forwarded, and the connection is reset;
- ``"reset-response"``: the request is forwarded (it takes effect), then the connection is
  reset halfway through the response body;
- ``"truncate"``: the request is forwarded, the full ``Content-Length`` is announced but only
  half the body is sent before the connection closes;
- ``"stall"``: nothing is answered for ``stall_seconds``, then the connection is reset; a
  client that hangs up first is counted as ``stall-dropped`` (its request timeout worked);
- ``"trickle"``: the answer is forwarded in ten pieces spread over ``stall_seconds``, a slow
  but moving transfer; a client that hangs up midway is counted as ``trickle-dropped``.

Decisions are reproducible: each one draws from ``random.Random`` seeded with the seed, the
method, the URL path and how many times that method and path were seen before, so they do
not depend on how concurrent requests interleave. :attr:`FaultProxy.counts` says what the
proxy did (``requests``, ``forwarded`` and one entry per fault kind), and
:attr:`FaultProxy.log` lists ``(method, path, fault or None)`` per request.

Example:
    >>> proxy = FaultProxy(upstream_port=4443).start()  # doctest: +SKIP
    >>> proxy.configure([Rule(rate=0.2)], seed=1)  # doctest: +SKIP
    >>> env = {"STORAGE_EMULATOR_HOST": proxy.url}  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import json
import os
import random
import re
import select
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from jobcommon.localgcs import LocalGCS, free_port

TRANSIENT = ("429", "503", "reset-request", "reset-response", "truncate")
STATUS_FAULTS = {"403", "404", "429", "503"}
ALL_FAULTS = (
    *sorted(STATUS_FAULTS),
    "reset-request",
    "reset-response",
    "truncate",
    "stall",
    "trickle",
)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


@dataclass(frozen=True)
class Rule:
    """Fault ``rate`` of the requests whose method and path (with query) match the regexes.

    ``faults`` are drawn uniformly per faulted request; ``limit`` caps how many times the
    rule fires in all (None: no cap); a spent rule lets the next matching rule decide.
    """

    rate: float = 0.2
    faults: tuple[str, ...] = TRANSIENT
    method: str = ".*"
    path: str = ".*"
    limit: int | None = None
    stall_seconds: float = 10.0
    body: str | None = None  # a regex on the request body's first 4 KiB (object names of
    # simple uploads travel there, not in the path)

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(ALL_FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; use some of {ALL_FAULTS}")

    def matches(self, method: str, path: str, body: bytes = b"") -> bool:
        return bool(
            re.fullmatch(self.method, method)
            and re.search(self.path, path)
            and (self.body is None or re.search(self.body.encode(), body[:4096]))
        )


# Object reads and writes: the traffic of a transfer, without listings and metadata calls.
UPLOADS = r"^/upload/storage/v1/"
DOWNLOADS = r"(^/download/storage/v1/|[?&]alt=media)"


class FaultProxy:
    """The proxy: ``start()``, ``configure(rules, seed)``, ``stop()``; see the module doc."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream_port = upstream_port
        self.host = host
        self.rules: list[Rule] = []
        self.seed = 0
        self.counts: Counter[str] = Counter()
        self.log: list[tuple[str, str, str | None]] = []
        self._seen: Counter[tuple[str, str]] = Counter()
        self._fired: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        # Called as on_request(method, path, body) before a request is forwarded; a true
        # result drops it (connection reset). Tests use it to act at an exact moment.
        self.on_request: Callable[[str, str, bytes], bool] | None = None
        self._server = http.server.ThreadingHTTPServer((host, 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def configure(self, rules: list[Rule], seed: int = 0) -> None:
        """Replace the rules and seed, and start counting afresh."""
        with self._lock:
            self.rules = list(rules)
            self.seed = seed
            self.counts = Counter()
            self.log = []
            self._seen = Counter()
            self._fired = Counter()
            self.on_request = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No faults inside the block (counting goes on)."""
        with self._lock:
            saved, self.rules = self.rules, []
        try:
            yield
        finally:
            with self._lock:
                self.rules = saved

    @property
    def faults(self) -> int:
        return sum(n for kind, n in self.counts.items() if kind in ALL_FAULTS)

    def requests_matching(self, pattern: str, method: str = ".*") -> int:
        """How many requests (faulted or not) had a matching method and path."""
        with self._lock:
            return sum(
                1 for m, p, _ in self.log if re.fullmatch(method, m) and re.search(pattern, p)
            )

    def decide(self, method: str, path: str, body: bytes = b"") -> tuple[str | None, Rule | None]:
        url_path = path.split("?", 1)[0]
        with self._lock:
            n = self._seen[(method, url_path)]
            self._seen[(method, url_path)] += 1
            rng = random.Random(f"{self.seed}|{method}|{url_path}|{n}")
            chosen: tuple[str | None, Rule | None] = (None, None)
            for index, rule in enumerate(self.rules):
                if not rule.matches(method, path, body):
                    continue
                if rule.limit is not None and self._fired[index] >= rule.limit:
                    continue  # spent: the next matching rule decides
                draw, pick = rng.random(), rng.choice(rule.faults)
                if draw < rule.rate:
                    self._fired[index] += 1
                    if pick in ("reset-response", "truncate") and "upload_id=" in path:
                        # A resumable upload chunk whose answer is lost: GCS answers the
                        # replayed chunk with the range it already holds (or the object,
                        # after the last one); fake-gcs-server appends the replay again or
                        # answers 404. Not emulable faithfully: drop the chunk instead.
                        pick = "reset-request"
                    chosen = (pick, rule)
                break
            fault = chosen[0]
            self.counts["requests"] += 1
            self.counts[fault or "forwarded"] += 1
            self.log.append((method, path, fault))
            return chosen


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: http.server.ThreadingHTTPServer

    def log_message(self, *args) -> None:
        pass

    @property
    def proxy(self) -> FaultProxy:
        return self.server.proxy  # type: ignore[attr-defined]

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reset(self) -> None:
        """Close with RST (SO_LINGER 0), as a dropped connection looks to the client."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def _client_hangs_up_within(self, seconds: float) -> bool:
        """Wait up to ``seconds`` (less if the proxy stops); True if the client closed first."""
        deadline = time.monotonic() + seconds
        while not self.proxy._closing.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.1))
            if readable:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return True
                except OSError:
                    return True
                time.sleep(0.05)  # a pipelined request waits its turn: keep stalling
        return False

    def _trickle(self, payload: bytes, seconds: float, pieces: int = 10) -> None:
        size = max(1, -(-len(payload) // pieces))
        try:
            for start in range(0, len(payload), size):
                if start and self.proxy._closing.wait(seconds / pieces):
                    return
                self.wfile.write(payload[start : start + size])
                self.wfile.flush()
        except OSError:
            with self.proxy._lock:
                self.proxy.counts["trickle-dropped"] += 1
            self.close_connection = True

    def _send_status(self, code: int) -> None:
        body = json.dumps(
            {"error": {"code": code, "message": f"injected fault {code}", "errors": []}}
        ).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        # The Host header goes through unchanged: the server builds resumable upload
        # addresses (Location) from it, and they must point back at the proxy.
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        for attempt in range(2):
            conn = getattr(self, "_upstream", None)
            if conn is None:
                conn = http.client.HTTPConnection(
                    "127.0.0.1", self.proxy.upstream_port, timeout=120
                )
                self._upstream = conn
            try:
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                if resp.will_close:
                    conn.close()
                    self._upstream = None
                return resp.status, resp.reason, resp.getheaders(), payload
            except (ConnectionError, http.client.HTTPException):
                conn.close()
                self._upstream = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _serve(self) -> None:
        body = self._read_body()
        fault, rule = self.proxy.decide(self.command, self.path, body)
        if fault == "reset-request":
            self._reset()
            return
        hook = self.proxy.on_request
        if hook is not None and hook(self.command, self.path, body):
            self._reset()
            return
        if fault in STATUS_FAULTS:
            self._send_status(int(fault))
            return
        if fault == "stall":
            if self._client_hangs_up_within(rule.stall_seconds):
                with self.proxy._lock:
                    self.proxy.counts["stall-dropped"] += 1
            self._reset()
            return
        try:
            status, reason, headers, payload = self._forward(body)
        except (OSError, http.client.HTTPException):
            self._send_status(502)
            return
        self.send_response(status, reason)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        if self.command == "HEAD":
            length = dict((k.lower(), v) for k, v in headers).get("content-length", "0")
            self.send_header("Content-Length", length)
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if fault == "trickle":
            self._trickle(payload, rule.stall_seconds)
            return
        if fault in ("reset-response", "truncate") and payload:
            self.wfile.write(payload[: len(payload) // 2])
            if fault == "reset-response":
                self._reset()
            else:
                self.close_connection = True
            return
        if fault in ("reset-response", "truncate"):
            self._reset()  # nothing to cut: drop the connection instead
            return
        self.wfile.write(payload)

    def _serve_quietly(self) -> None:
        try:
            self._serve()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up on this request: fine

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve_quietly


class FaultyGCS:
    """fake-gcs-server with a :class:`FaultProxy` in front; both on loopback.

    ``env()`` points child processes at the proxy; ``direct()`` (a context manager) points
    this process straight at the server, for setting up and checking data without faults,
    and ``via_proxy()`` through the proxy.
    """

    def __init__(self, data_dir: str) -> None:
        server_port = free_port()
        self.proxy = FaultProxy(server_port)
        self.server = LocalGCS(data_dir, port=server_port, external_url=self.proxy.url)

    def start(self) -> FaultyGCS:
        self.proxy.start()
        self.server.start()
        return self

    def stop(self) -> None:
        self.proxy.stop()
        self.server.stop()

    def new_bucket(self, key: str | None = None) -> str:
        """A new bucket; named after ``key`` (e.g. the test's name) so that a rerun sends
        the same paths, and with them meets the same faults."""
        digest = hashlib.sha1((key or uuid.uuid4().hex).encode()).hexdigest()[:12]
        name = f"chaos-{digest}"
        self.server.create_bucket(name)
        return f"gs://{name}"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = self.server.env(base)
        env["STORAGE_EMULATOR_HOST"] = self.proxy.url
        return env

    @contextlib.contextmanager
    def _endpoint(self, endpoint: str) -> Iterator[None]:
        old = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = endpoint
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("STORAGE_EMULATOR_HOST", None)
            else:
                os.environ["STORAGE_EMULATOR_HOST"] = old

    @contextlib.contextmanager
    def direct(self) -> Iterator[None]:
        """Talk to the server without faults (resumable upload chunks still go to the
        address the server hands out, the proxy, so it is paused meanwhile)."""
        with self._endpoint(self.server.endpoint), self.proxy.paused():
            yield

    def via_proxy(self):
        return self._endpoint(self.proxy.url)
