"""scikit-image's bundled photos as a loopback URL list with docstring captions."""

from __future__ import annotations

import io
import urllib.request

from PIL import Image

from pipelines.download import skimage_photos
from pipelines.download.loopback import LoopbackImageServer, live_url


def test_photos_have_their_docstring_captions() -> None:
    table = skimage_photos.url_table()
    assert table.num_rows >= 20
    rows = {r["laion_2b"]: r for r in table.to_pylist()}
    assert rows["chelsea"]["capsfusion"] == "Chelsea the cat."
    assert rows["astronaut"]["capsfusion"] == "Color image of the astronaut Eileen Collins."
    assert rows["rocket"]["url"] == "http://loopback.invalid/skimage/rocket.jpg"
    assert all(r["capsfusion"].endswith(".") for r in rows.values())


def test_served_photos_decode() -> None:
    table = skimage_photos.url_table()
    with LoopbackImageServer(folders=skimage_photos.served_folders()) as server:
        for url in table.column("url").to_pylist()[:3]:
            with urllib.request.urlopen(live_url(url, server.base_url), timeout=5) as response:
                image = Image.open(io.BytesIO(response.read()))
                image.load()
            assert min(image.size) >= 64
