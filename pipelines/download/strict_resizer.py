"""img2dataset's Resizer, made to name empty and truncated downloads instead of lumping them.

img2dataset reports every undecodable body as "Image decoding error" (an empty body even as an
OpenCV assertion), so a cut-off JPEG, an HTML error page and an empty response look alike in
its stats. Depending on the decoder build, a truncated JPEG may even decode with grey filler: an
image silently replaced. `StrictResizer` checks the bytes first (empty → "empty body"; PIL
decodes the whole stream, JPEGs at 1/8 scale, which still reads every byte → "truncated image:
…" or "corrupt image: …") and then hands over to img2dataset's own resizer unchanged.

Wrap, don't fork: `install()` swaps the class img2dataset's `download()` instantiates; the
downloader pickles the instance to its spawned workers, which import it from here.
"""

from __future__ import annotations

import io
from typing import Any

from vlora.utils.env import apply_offline_defaults

# albumentations (imported by img2dataset) checks for updates over the network on import unless
# NO_ALBUMENTATIONS_UPDATE is set: set the offline defaults before the import, whoever imports us.
apply_offline_defaults()

from img2dataset.resizer import Resizer  # noqa: E402

EMPTY_BODY = "empty body"
TRUNCATED = "truncated image"
CORRUPT = "corrupt image"


def integrity_problem(data: bytes) -> str | None:
    """Why these bytes are not a complete image, or None (also None for unknown formats,
    which the real decoder then judges)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        return EMPTY_BODY
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format == "JPEG":
                # Scaled decoding still consumes the whole entropy-coded stream.
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except UnidentifiedImageError:
        return None
    except Image.DecompressionBombError:
        return None  # img2dataset's own max_image_area check decides
    except (OSError, SyntaxError, ValueError) as err:
        text = str(err)
        return f"{TRUNCATED}: {text}" if "truncated" in text.lower() else f"{CORRUPT}: {text}"
    return None


class StrictResizer(Resizer):
    def __call__(self, img_stream: Any, blurring_bbox_list: Any = None) -> tuple:
        img_stream.seek(0)
        problem = integrity_problem(img_stream.read())
        img_stream.seek(0)
        if problem is not None:
            return None, None, None, None, None, problem
        return super().__call__(img_stream, blurring_bbox_list)


def install() -> None:
    """Make img2dataset.download() build a StrictResizer (call in the process that runs it)."""
    import importlib

    # `img2dataset.main` the attribute is a function (the package re-exports it): use the module.
    module = importlib.import_module("img2dataset.main")
    if not isinstance(getattr(module, "Resizer", None), type):
        raise RuntimeError("img2dataset.main.Resizer not found: unsupported img2dataset version")
    module.Resizer = StrictResizer
