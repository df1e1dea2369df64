"""A loopback HTTP image server: serves folders or in-memory files on 127.0.0.1, ephemeral port.

Used by the local default run (easy-vqa and scikit-image photos become a URL list that
img2dataset downloads like any web source) and by tests, which also inject the failures real
URL lists contain. A fault is chosen per path, either with `faults={"a/b.jpg": Fault.NOT_FOUND}`
or by requesting `/__fault__/<fault>/<anything>` (`server.fault_url(Fault.TIMEOUT, "x")`):

| fault        | response                                                            |
|--------------|---------------------------------------------------------------------|
| `not_found`  | HTTP 404                                                            |
| `server_error` | HTTP 500                                                          |
| `timeout`    | waits `slow_seconds` before answering (longer than the client timeout) |
| `not_image`  | 200 with HTML bytes                                                 |
| `truncated`  | 200 with the first half of a valid JPEG (correct Content-Length)    |
| `empty`      | 200 with an empty body                                              |

The server runs in a daemon thread and stops when the `with` block ends; a slow response
wakes up as soon as the server stops, so shutting down never waits for `slow_seconds`.
"""

from __future__ import annotations

import io
import mimetypes
import posixpath
import threading
import time
from collections import Counter
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

FAULT_PREFIX = "__fault__"
# URL lists of loopback sources are stored with this base (the reserved .invalid TLD never
# resolves) and rewritten to the live server's address for each run: ports are ephemeral.
CANONICAL_BASE = "http://loopback.invalid/"


def canonical_url(path: str) -> str:
    return CANONICAL_BASE + path.lstrip("/")


def live_url(url: str, base_url: str) -> str:
    """`http://loopback.invalid/x` → `{base_url}x`; other URLs unchanged."""
    return base_url + url[len(CANONICAL_BASE) :] if url.startswith(CANONICAL_BASE) else url


class Fault(StrEnum):
    NOT_FOUND = "not_found"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    NOT_IMAGE = "not_image"
    TRUNCATED = "truncated"
    EMPTY = "empty"


def sample_jpeg(size: int = 96, seed: int = 0) -> bytes:
    """A small, valid, non-uniform JPEG (a colour gradient) for tests and fault bodies."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    base = rng.integers(0, 255, size=3).astype(np.float32)
    pixels = (base[None, None, :] + ramp[:, None, None] * 0.5 + ramp[None, :, None] * 0.5) % 256
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


NOT_AN_IMAGE = b"<!doctype html><html><body>This page moved.</body></html>"


class LoopbackImageServer:
    """`with LoopbackImageServer(folders={"photos": "/data/photos"}) as server: server.url(...)`.

    folders: URL prefix → local folder (files under it are served by relative path).
    files: URL path → bytes. faults: URL path → Fault. delay_seconds: added to every response
    (to emulate a remote server). slow_seconds: how long a `timeout` fault stalls.
    """

    def __init__(
        self,
        folders: dict[str, str | Path] | None = None,
        files: dict[str, bytes] | None = None,
        faults: dict[str, Fault | str] | None = None,
        delay_seconds: float = 0.0,
        slow_seconds: float = 30.0,
    ) -> None:
        self.folders = {k.strip("/"): Path(v).resolve() for k, v in (folders or {}).items()}
        self.files = {k.strip("/"): v for k, v in (files or {}).items()}
        self.faults = {k.strip("/"): Fault(v) for k, v in (faults or {}).items()}
        self.delay_seconds = delay_seconds
        self.slow_seconds = slow_seconds
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        full = sample_jpeg(128)
        self._truncated_body = full[: len(full) // 2]

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> LoopbackImageServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._stopping.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="loopback-image-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- addresses --------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the loopback server is not running (use it as a context manager)")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def url(self, path: str) -> str:
        return self.base_url + path.lstrip("/")

    def fault_url(self, fault: Fault | str, name: str) -> str:
        return self.url(f"{FAULT_PREFIX}/{Fault(fault).value}/{name}")

    # -- routing ----------------------------------------------------------------------------
    def fault_for(self, path: str) -> Fault | None:
        if path in self.faults:
            return self.faults[path]
        parts = path.split("/")
        if len(parts) >= 2 and parts[0] == FAULT_PREFIX:
            try:
                return Fault(parts[1])
            except ValueError:
                return None
        return None

    def content_for(self, path: str) -> bytes | None:
        if path in self.files:
            return self.files[path]
        for prefix, root in self.folders.items():
            if prefix and not path.startswith(prefix + "/"):
                continue
            relative = path[len(prefix) + 1 :] if prefix else path
            candidate = (root / relative).resolve()
            # Never serve anything outside the folder (no "../" escapes).
            if candidate.is_relative_to(root) and candidate.is_file():
                return candidate.read_bytes()
        return None

    def record(self, path: str) -> None:
        with self._lock:
            self.requests[path] += 1

    def wait(self, seconds: float) -> None:
        """Sleep, but wake up as soon as the server is stopping."""
        self._stopping.wait(seconds)

    def truncated_body(self) -> bytes:
        return self._truncated_body


class _Handler(BaseHTTPRequestHandler):
    server_owner: LoopbackImageServer
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: thousands of requests per run would flood the logs."""

    def do_GET(self) -> None:
        owner = self.server_owner
        path = posixpath.normpath(unquote(urlsplit(self.path).path)).lstrip("/")
        owner.record(path)
        if owner.delay_seconds:
            owner.wait(owner.delay_seconds)
        fault = owner.fault_for(path)
        if fault is Fault.NOT_FOUND:
            self._send(404, b"not found", "text/plain")
        elif fault is Fault.SERVER_ERROR:
            self._send(500, b"internal error", "text/plain")
        elif fault is Fault.TIMEOUT:
            started = time.monotonic()
            owner.wait(owner.slow_seconds)
            if time.monotonic() - started >= owner.slow_seconds:
                self._send(200, sample_jpeg(), "image/jpeg")
        elif fault is Fault.NOT_IMAGE:
            self._send(200, NOT_AN_IMAGE, "image/jpeg")
        elif fault is Fault.TRUNCATED:
            self._send(200, owner.truncated_body(), "image/jpeg")
        elif fault is Fault.EMPTY:
            self._send(200, b"", "image/jpeg")
        else:
            body = owner.content_for(path)
            if body is None:
                self._send(404, b"not found", "text/plain")
            else:
                kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
                self._send(200, body, kind)

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout); nothing to answer
