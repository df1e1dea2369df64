"""Decoding and preprocessing one image, with a stable reason for every failure.

Corrupt inputs are reported, never replaced by a blank or grey image (the release's habit).
Reasons: missing_image, unreadable (set by the readers), empty_file, not_an_image, truncated,
too_large (decompression bomb), empty_image, decode_error (anything else PIL rejects).
"""

from __future__ import annotations

import io
import warnings

import torch
from PIL import Image, UnidentifiedImageError

from vlora.vision.preprocess import ImagePreprocessor


class DecodeError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode_image(data: bytes | None, preprocessor: ImagePreprocessor) -> torch.Tensor:
    """Encoded bytes → normalised pixels [3, S, S] (the encoder's preprocessing); raises
    DecodeError with a reason."""
    if data is None:
        raise DecodeError("missing_image", "file not found")
    if not data:
        raise DecodeError("empty_file", "0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()  # truncated files fail here (unless PIL's LOAD_TRUNCATED_IMAGES is on:
            # the encoder actor turns it off in its process)
    except UnidentifiedImageError as err:
        raise DecodeError("not_an_image", str(err)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DecodeError("too_large", str(err)) from None
    except (OSError, SyntaxError, ValueError) as err:
        reason = "truncated" if "truncated" in str(err).lower() else "decode_error"
        raise DecodeError(reason, str(err)) from None
    if min(image.size) < 1:
        raise DecodeError("empty_image", f"size {image.size}")
    try:
        pixels = preprocessor.normalise(preprocessor.to_square_rgb(image))  # [3, S, S]
    except (OSError, ValueError) as err:  # e.g. a mode PIL cannot convert to RGB
        raise DecodeError("decode_error", f"{type(err).__name__}: {err}") from None
    if not bool(torch.isfinite(pixels).all()):
        raise DecodeError("decode_error", "non-finite pixels")
    return pixels
