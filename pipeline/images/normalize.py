"""Photo bytes -> small RGB JPEG + content key + photo checks.

Why JPEG draft mode: a 12-MP JPEG decoded at 1/4 scale by libjpeg costs a fraction of a full
decode, and the captioner only ever sees <= `max_side` pixels anyway.
"""

from __future__ import annotations

import hashlib
import io
import time
import warnings

import numpy as np
import pillow_heif
from PIL import Image, UnidentifiedImageError

from pipeline.images.decode_budget import MB, DecodeBudget, default_budget
from pipeline.errors import BadInputError
from pipeline.models import NormalizedImage
from pipeline.images.photo_checks import compute_photo_checks
from pipeline.images.perceptual import phash

pillow_heif.register_heif_opener()  # lets Image.open read iPhone HEIC/HEIF photos

SUPPORTED_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "HEIF", "MPO"}
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
STRIP_BYTES = 8 * MB  # RGB(A) bytes per strip when a large image is converted and reduced
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp", ".heic", ".heif"}


def normalize_image(
    data: bytes, *, max_side: int = 768, max_pixels: int = 50_000_000, quality: int = 85, budget: DecodeBudget | None = None,
) -> NormalizedImage:
    """Decode, orient, convert to RGB, shrink to `max_side` and re-encode as JPEG.

    The one full decode happens under `budget` (default: the process-wide one from
    `DECODE_BUDGET_MB`), holding what `decode_cost` says it needs; everything after it works on
    an image of at most ~2 x `max_side` per side.
    """
    if not data:
        raise BadInputError("The file is empty (0 bytes).")
    image = open_image(data, max_pixels=max_pixels)
    orientation = exif_orientation(image, data)  # header only: never decodes pixels
    original_size = upright_size(image, orientation)
    stored_size = image.size
    _request_draft(image, max_side)
    budget = budget if budget is not None else default_budget()
    try:
        with budget.hold(decode_cost(image, stored_size, max_side)):
            image.load()
            image = shrink_to_rgb(image, max_side)  # the full-size pixels are dropped here
        image = orient(image, orientation)
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadInputError("The image file is damaged or incomplete and cannot be read.") from exc
    # Bilinear is enough here: after draft scaling / box reduction the remaining factor is < 2,
    # Pillow's filter widens with the factor (so it still antialiases), and the model resizes to
    # 224-364 px anyway.
    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    jpeg = encode_jpeg(image, quality)
    ow, oh = original_size
    checks_started = time.perf_counter()
    checks = compute_photo_checks(image, original_size=(ow, oh))
    checks_ms = (time.perf_counter() - checks_started) * 1000.0
    return NormalizedImage(
        jpeg=jpeg,
        width=image.width,
        height=image.height,
        original_width=ow,
        original_height=oh,
        original_bytes=len(data),
        content_key=hashlib.sha256(jpeg).hexdigest(),
        checks=checks,
        checks_ms=checks_ms,
        phash=phash(image),  # near-duplicates (issue 19): the small RGB image made anyway
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


def upright_size(image: Image.Image, orientation: int | None = None) -> tuple[int, int]:
    """Size as the photo is meant to be seen: EXIF orientations 5-8 swap width and height."""
    width, height = image.size
    if orientation is None:
        orientation = exif_orientation(image)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def exif_orientation(image: Image.Image, data: bytes | None = None) -> int:
    """EXIF orientation 1-8 from header data only.

    `getexif()` on a PNG decodes the whole image when the eXIf chunk was not seen before the pixel
    data (a 208 KB PNG can be 196 MB of pixels), so PNGs are read from `image.info` or by walking
    the chunk headers of `data`; other formats keep EXIF in their headers.
    """
    try:
        if image.format == "PNG":
            raw = image.info.get("exif") or (png_exif_chunk(data) if data else None)
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = image.getexif()
        value = int(exif.get(0x0112, 1))
    except Exception:  # malformed EXIF: show the photo as stored rather than fail it
        return 1
    return value if 1 <= value <= 8 else 1


def png_exif_chunk(data: bytes) -> bytes | None:
    """The eXIf chunk's payload, found by skipping from chunk header to chunk header (no inflating)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    offset, end = 8, len(data)
    while offset + 8 <= end:
        length = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        if kind == b"eXIf":
            return data[offset + 8 : offset + 8 + length]
        if kind == b"IEND":
            return None
        offset += 12 + length
    return None


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def orient(image: Image.Image, orientation: int) -> Image.Image:
    """Turn the (already small) image upright, as `ImageOps.exif_transpose` would."""
    method = _TRANSPOSE.get(orientation)
    return image.transpose(method) if method is not None else image


def bytes_per_pixel(mode: str) -> int:
    """What Pillow stores per decoded pixel: 1 for L/P/1, 2 for 16-bit grey, else 4 (RGB too)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def decode_cost(image: Image.Image, stored_size: tuple[int, int], max_side: int) -> int:
    """Bytes a full decode of `image` (after any draft request) and its shrinking will hold at once.

    The decoded pixels, plus the working copies: whole-image conversions when no box reduction is
    needed (the image is then < 2 x max_side per side), else a few strips and the reduced image.
    A progressive JPEG also makes libjpeg keep every DCT coefficient of the *stored* size
    (2 bytes each, per component at its sampling), whatever the draft scale.
    """
    width, height = image.size
    decoded = width * height * bytes_per_pixel(image.mode)
    factor = reduce_factor(image.size, max_side)
    if factor == 1:
        working = 3 * width * height * 4
    else:
        working = 4 * STRIP_BYTES + (-(-width // factor)) * (-(-height // factor)) * 4
    coefficients = 0
    if image.format in ("JPEG", "MPO") and image.info.get("progressive"):
        coefficients = _jpeg_coefficient_bytes(image, stored_size)
    return decoded + working + coefficients


def _jpeg_coefficient_bytes(image: Image.Image, stored_size: tuple[int, int]) -> int:
    width, height = stored_size
    layers = getattr(image, "layer", None) or [(0, 1, 1, 0)] * max(1, getattr(image, "layers", 3))
    h_max = max(layer[1] for layer in layers) or 1
    v_max = max(layer[2] for layer in layers) or 1
    total = 0
    for _, h, v, _ in layers:
        blocks_x = -(-width * h // (8 * h_max))
        blocks_y = -(-height * v // (8 * v_max))
        total += blocks_x * blocks_y * 64 * 2
    return total


def reduce_factor(size: tuple[int, int], max_side: int) -> int:
    """The largest whole factor that keeps the longest side >= max_side (1: no reduction)."""
    return max(1, max(size) // max(1, max_side))


def shrink_to_rgb(image: Image.Image, max_side: int) -> Image.Image:
    """Loaded image of any mode -> RGB with its longest side in [max_side, 2 x max_side).

    Large images are converted and box-reduced a strip at a time, so no full-size RGB(A) copy
    (nor the premultiplied copy Pillow's resize makes of RGBA) is ever made next to the decoded
    pixels.
    """
    factor = reduce_factor(image.size, max_side)
    if factor == 1:
        return to_rgb(image)
    width, height = image.size
    extremes = _wide_extremes(image) if image.mode in WIDE_MODES else None
    rows = max(factor, (STRIP_BYTES // (width * 4)) // factor * factor)
    out = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(top + rows, height)))
        out.paste(to_rgb(strip, extremes).reduce(factor), (0, top // factor))
    return out


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


def to_rgb(image: Image.Image, extremes: tuple[float, float] | None = None) -> Image.Image:
    """Any Pillow mode -> RGB. Transparency is composited on white (product photos expect white).
    `extremes`: the (low, high) of the whole image when `image` is one strip of a wide-mode image."""
    if image.mode == "RGB":
        return image
    if image.mode in WIDE_MODES:
        image = _wide_to_l(image, extremes)
    if image.mode == "P" or image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("LA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _wide_extremes(image: Image.Image) -> tuple[float, float]:
    low, high = image.getextrema()  # type: ignore[misc]
    return float(low), float(high)


def _wide_to_l(image: Image.Image, extremes: tuple[float, float] | None = None) -> Image.Image:
    """16-bit / 32-bit greyscale -> 8-bit, stretched to the values actually used."""
    array = np.asarray(image, dtype=np.float64)
    low, high = extremes if extremes is not None else (float(array.min()), float(array.max()))
    if high <= low:
        scaled = np.zeros_like(array, dtype=np.uint8)
    else:
        scaled = np.clip((array - low) * (255.0 / (high - low)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()

