"""`image_url` parts → validated image bytes: data URLs, and http(s) URLs when enabled.

Data URLs must be `data:image/png|jpeg|webp;base64,…` with strict base64. Downloads stream at
most `max_image_bytes` within `image_url_timeout_s`, redirects are not followed (a redirect
could point anywhere; the client can pass the final URL). The bytes must then decode fully as a
PNG, JPEG or WebP image of at most `max_image_pixels`. Every failure is a 400 naming the part.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings

from PIL import Image

from pipelines.serve.config import APISettings
from pipelines.serve.errors import bad_request

FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
MEDIA_TYPES = {"image/png", "image/jpeg", "image/jpg", "image/webp"}
_DATA_URL = re.compile(
    r"^data:(?P<media>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w=.-]+)*),(?P<data>.*)$", re.S
)


def decode_data_url(url: str, settings: APISettings, param: str) -> bytes:
    match = _DATA_URL.match(url)
    if not match:
        raise bad_request("image_url is not a valid data: URL", param, "invalid_image_url")
    media = (match["media"] or "").lower()
    if media not in MEDIA_TYPES:
        raise bad_request(
            f"image_url: media type '{media or 'none'}' is not supported; send image/png, "
            "image/jpeg or image/webp",
            param,
            "invalid_image_format",
        )
    if ";base64" not in match["params"]:
        raise bad_request("image_url: data URLs must be base64-encoded", param, "invalid_base64")
    payload = match["data"].strip()
    if len(payload) * 3 // 4 > settings.max_image_bytes + 3:
        raise image_too_large(len(payload) * 3 // 4, settings, param)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise bad_request(f"image_url: invalid base64 ({err})", param, "invalid_base64") from None
    if len(data) > settings.max_image_bytes:
        raise image_too_large(len(data), settings, param)
    return data


def image_too_large(size: int, settings: APISettings, param: str):
    return bad_request(
        f"image is {size:,} bytes; the limit is {settings.max_image_bytes:,}",
        param,
        "image_too_large",
    )


async def fetch_image_url(url: str, settings: APISettings, param: str) -> bytes:
    import httpx

    if not settings.allow_image_urls:
        raise bad_request(
            "image_url: only data: URLs are accepted by this server (http(s) image URLs are "
            "off; start it with --allow-image-urls)",
            param,
            "image_urls_disabled",
        )
    timeout = httpx.Timeout(settings.image_url_timeout_s)
    try:
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise bad_request(
                    f"image_url: fetching it answered HTTP {response.status_code}",
                    param,
                    "image_fetch_failed",
                )
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > settings.max_image_bytes:
                raise image_too_large(int(declared), settings, param)
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > settings.max_image_bytes:
                    raise image_too_large(size, settings, param)
                chunks.append(chunk)
    except httpx.TimeoutException:
        raise bad_request(
            f"image_url: no complete answer within {settings.image_url_timeout_s:g} s",
            param,
            "image_fetch_timeout",
        ) from None
    except httpx.HTTPError as err:
        raise bad_request(
            f"image_url: fetching it failed ({type(err).__name__}: {err})",
            param,
            "image_fetch_failed",
        ) from None
    return b"".join(chunks)


def check_image(data: bytes, settings: APISettings, param: str) -> Image.Image:
    """Fully decode the bytes (RGB); 400 when they are not a supported, sane image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.format not in FORMATS:
                    raise bad_request(
                        f"image is {image.format or 'of an unknown format'}; send PNG, JPEG or "
                        "WebP",
                        param,
                        "invalid_image_format",
                    )
                if image.width * image.height > settings.max_image_pixels:
                    raise bad_request(
                        f"image is {image.width}×{image.height} pixels; the limit is "
                        f"{settings.max_image_pixels:,}",
                        param,
                        "image_too_large",
                    )
                return image.convert("RGB")  # decodes every pixel: truncated files fail here
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise bad_request("image is too large to decode safely", param, "image_too_large") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise bad_request(
            f"image bytes do not decode as an image ({err})", param, "invalid_image"
        ) from None
