"""Notebooks built in code, loopback servers and a counting GCS proxy for the executor tests."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import subprocess
import sys
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable

import nbformat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def notebook(
    parameters: str | None, *cells: str, kernel: str = "python3", language: str = "python"
) -> nbformat.NotebookNode:
    """A notebook with an optional ``parameters`` cell followed by code cells."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": language}
    nb.metadata["language_info"] = {"name": language}
    if parameters is not None:
        nb.cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells.extend(nbformat.v4.new_code_cell(src) for src in cells)
    return nb


def write(nb: nbformat.NotebookNode, path: str) -> str:
    nbformat.write(nb, path)
    return path


TRAIN_PARAMS = 'epochs = 10\nlr = 0.1\nname = "base"\nuse_gpu = False\n'
TRAIN_CELLS = (
    "import scrapbook as sb",
    "accuracy = round(min(0.99, 0.5 + epochs * lr / 10), 4)\nprint(name, epochs, lr, use_gpu)",
    "sb.glue('accuracy', accuracy)\nsb.glue('epochs_seen', epochs)\n"
    "sb.glue('types', [type(epochs).__name__, type(lr).__name__, type(name).__name__, "
    "type(use_gpu).__name__])\nsb.glue('name', name)",
)


def train_notebook() -> nbformat.NotebookNode:
    """A tiny 'training' notebook: typed parameters in, glued metrics out."""
    return notebook(TRAIN_PARAMS, *TRAIN_CELLS)


def sleepy_notebook(cells: int = 50, sleep: float = 0.05) -> nbformat.NotebookNode:
    """``cells`` code cells that each sleep a little (papermill saves at each start and end)."""
    return notebook(
        "sleep = 0.05\n",
        "import time",
        *[f"time.sleep(sleep)\nx{i} = {i}" for i in range(cells - 1)],
    )


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 240, cwd: str = REPO
) -> subprocess.CompletedProcess:
    """``python -m executor ARGS`` in a child process, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "executor", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---------------------------------------------------------------- loopback HTTP servers


class Recorder:
    """A threaded HTTP server on loopback whose handler is a function; keeps every request."""

    def __init__(
        self, handle: Callable[[Recorder, str, str, dict, bytes], tuple[int, dict, bytes]]
    ) -> None:
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with recorder.lock:
                    recorder.requests.append({
                        "method": self.command, "path": self.path,
                        "headers": dict(self.headers), "body": body,
                    })  # fmt: skip
                code, headers, payload = handle(
                    recorder, self.command, self.path, dict(self.headers), body
                )
                try:
                    self.send_response(code)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on this request (it retries or moved on)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class CountingGCSProxy(Recorder):
    """Forwards every request to fake-gcs-server and counts upload requests per object.

    One object write is one ``POST /upload/storage/v1/b/BUCKET/o`` (a single-request or
    multipart upload, or the start of a resumable one); the object name is in the ``name``
    query parameter or in the JSON metadata part of a multipart body.
    """

    def __init__(self, upstream: str, refuse: set[str] = frozenset()) -> None:
        self.upstream = urllib.parse.urlparse(upstream)
        self.uploads: Counter[str] = Counter()
        self.refuse = set(refuse)  # object names whose uploads get 403 Forbidden
        super().__init__(self._forward)

    @staticmethod
    def _object_name(path: str, headers: dict, body: bytes) -> str | None:
        url = urllib.parse.urlparse(path)
        if not url.path.startswith("/upload/storage/v1/b/"):
            return None
        query = urllib.parse.parse_qs(url.query)
        if "upload_id" in query:
            return None  # a later chunk of a resumable upload already counted
        if "name" in query:
            return query["name"][0]
        for part in body.split(b"\n"):
            part = part.strip()
            if part.startswith(b"{") and b'"name"' in part:
                try:
                    return json.loads(part)["name"]
                except (ValueError, KeyError):
                    pass
        return "?"

    def _forward(self, _rec, method, path, headers, body):
        if method in ("POST", "PUT"):
            name = self._object_name(path, headers, body)
            if name is not None:
                with self.lock:
                    self.uploads[name] += 1
                if name in self.refuse:
                    error = {"error": {"code": 403, "message": "Forbidden"}}
                    return 403, {"Content-Type": "application/json"}, json.dumps(error).encode()
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        fwd = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length")}
        conn.request(method, path, body=body or None, headers=fwd)
        resp = conn.getresponse()
        payload = resp.read()
        out = {
            k: v for k, v in resp.getheaders()
            if k.lower() not in ("transfer-encoding", "content-length", "connection")
        }  # fmt: skip
        conn.close()
        return resp.status, out, payload
