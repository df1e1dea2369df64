"""The loopback image server: folders, in-memory files, and every injected fault."""

from __future__ import annotations

import io
import socket
import time
import urllib.error
import urllib.request

import pytest
from PIL import Image

from pipelines.download.loopback import (
    NOT_AN_IMAGE,
    Fault,
    LoopbackImageServer,
    canonical_url,
    live_url,
    sample_jpeg,
)


def fetch(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def test_serves_folders_and_memory_files_on_loopback(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    photo = sample_jpeg(64, seed=3)
    (tmp_path / "sub" / "a.jpg").write_bytes(photo)
    (tmp_path / "secret.txt").write_text("outside the served folder")
    with LoopbackImageServer(folders={"pics": tmp_path / "sub"}, files={"x/y.png": b"png"}) as s:
        assert s.base_url.startswith("http://127.0.0.1:")
        assert fetch(s.url("pics/a.jpg")) == (200, photo)
        assert fetch(s.url("x/y.png")) == (200, b"png")
        assert fetch(s.url("pics/missing.jpg"))[0] == 404
        assert fetch(s.url("pics/../secret.txt"))[0] == 404  # no escape from the folder
        assert s.requests["pics/a.jpg"] == 1
        port = s.port
    with socket.socket() as probe:  # stopped: nothing listens on the port any more
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_each_fault_behaves_as_documented() -> None:
    with LoopbackImageServer(faults={"named/404.jpg": Fault.NOT_FOUND}, slow_seconds=3) as s:
        assert fetch(s.url("named/404.jpg"))[0] == 404
        assert fetch(s.fault_url(Fault.NOT_FOUND, "a"))[0] == 404
        assert fetch(s.fault_url(Fault.SERVER_ERROR, "b"))[0] == 500
        assert fetch(s.fault_url(Fault.NOT_IMAGE, "c")) == (200, NOT_AN_IMAGE)
        assert fetch(s.fault_url(Fault.EMPTY, "d")) == (200, b"")
        status, body = fetch(s.fault_url(Fault.TRUNCATED, "e"))
        assert status == 200 and body.startswith(b"\xff\xd8") and len(body) > 100
        with pytest.raises(OSError, match="truncated"):
            Image.open(io.BytesIO(body)).load()
        started = time.monotonic()
        with pytest.raises((TimeoutError, urllib.error.URLError)):
            fetch(s.fault_url(Fault.TIMEOUT, "f"), timeout=0.5)
        assert time.monotonic() - started < 2.5
        stop_started = time.monotonic()
    # stopping does not wait for the stalled response
    assert time.monotonic() - stop_started < 2.5


def test_canonical_urls_are_rewritten_to_the_live_server() -> None:
    url = canonical_url("easyvqa/train/3.png")
    assert url == "http://loopback.invalid/easyvqa/train/3.png"
    assert live_url(url, "http://127.0.0.1:999/") == "http://127.0.0.1:999/easyvqa/train/3.png"
    assert live_url("https://example.com/a.jpg", "http://127.0.0.1:999/") == (
        "https://example.com/a.jpg"
    )
