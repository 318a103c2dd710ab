"""Photo bytes -> small RGB JPEG + content key + photo checks.

Why JPEG draft mode: a 12-MP JPEG decoded at 1/4 scale by libjpeg costs a fraction of a full
decode, and the captioner only ever sees <= `max_side` pixels anyway.
"""

from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.errors import BadInputError
from pipeline.models import NormalizedImage
from pipeline.photo_checks import compute_photo_checks

pillow_heif.register_heif_opener()  # lets Image.open read iPhone HEIC/HEIF photos

SUPPORTED_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "HEIF", "MPO"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp", ".heic", ".heif"}


def normalize_image(data: bytes, *, max_side: int = 768, max_pixels: int = 50_000_000, quality: int = 85) -> NormalizedImage:
    """Decode, orient, convert to RGB, shrink to `max_side` and re-encode as JPEG."""
    if not data:
        raise BadInputError("The file is empty (0 bytes).")
    image = open_image(data, max_pixels=max_pixels)
    original_size = upright_size(image)
    _request_draft(image, max_side)
    try:
        image = ImageOps.exif_transpose(image)  # also loads the (draft-scaled) pixels
        image = to_rgb(image)
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadInputError("The image file is damaged or incomplete and cannot be read.") from exc
    # Bilinear is enough here: after draft scaling the remaining factor is < 2, Pillow's filter
    # widens with the factor (so it still antialiases), and the model resizes to 224-364 px anyway.
    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    jpeg = encode_jpeg(image, quality)
    ow, oh = original_size
    return NormalizedImage(
        jpeg=jpeg,
        width=image.width,
        height=image.height,
        original_width=ow,
        original_height=oh,
        original_bytes=len(data),
        content_key=hashlib.sha256(jpeg).hexdigest(),
        checks=compute_photo_checks(image, original_size=(ow, oh)),
    )


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and refuse unsupported formats and decompression bombs."""
    try:
        with warnings.catch_warnings():
            # Pillow's bomb guard stays on; its warning tier becomes an error so nothing huge decodes.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadInputError(f"The image is too large to process safely (over {max_pixels / 1e6:.0f} megapixels).") from exc
    except UnidentifiedImageError as exc:
        raise BadInputError("This file is not a readable image (supported: JPEG, PNG, WebP, GIF, TIFF, BMP, HEIC).") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadInputError("The image file is damaged or incomplete and cannot be read.") from exc
    if image.format not in SUPPORTED_FORMATS:
        raise BadInputError(f"Image format {image.format} is not supported (use JPEG, PNG, WebP, GIF, TIFF, BMP or HEIC).")
    width, height = image.size
    if width < 1 or height < 1:
        raise BadInputError("The image has no pixels.")
    if width * height > max_pixels:
        megapixels = width * height / 1e6
        raise BadInputError(f"The image is {megapixels:.0f} megapixels; the limit is {max_pixels / 1e6:.0f}.")
    return image


def upright_size(image: Image.Image) -> tuple[int, int]:
    """Size as the photo is meant to be seen: EXIF orientations 5-8 swap width and height."""
    width, height = image.size
    orientation = image.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _request_draft(image: Image.Image, max_side: int) -> None:
    """Ask libjpeg to decode at the smallest 1/2^k scale whose longest side is still >= max_side."""
    if image.format not in ("JPEG", "MPO"):
        return
    width, height = image.size
    longest = max(width, height)
    if longest <= max_side:
        return
    scale = max_side / longest
    image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB. Transparency is composited on white (product photos expect white)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _wide_to_l(image)
    if image.mode == "P" or image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("LA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _wide_to_l(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit greyscale -> 8-bit, stretched to the values actually used."""
    array = np.asarray(image, dtype=np.float64)
    low, high = float(array.min()), float(array.max())
    if high <= low:
        scaled = np.zeros_like(array, dtype=np.uint8)
    else:
        scaled = ((array - low) * (255.0 / (high - low))).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()

