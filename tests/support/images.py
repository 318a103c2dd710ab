"""Deterministic test images in every format the pipeline accepts, and some it must refuse."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw


def product_photo(size=(800, 600), color=(200, 40, 40), background=(255, 255, 255), seed: int = 0) -> Image.Image:
    """A 'product' (a textured shape) on a plain background; sharp edges, so it is not blurry."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.rectangle([w // 4, h // 4, 3 * w // 4, 3 * h // 4], fill=color, outline=(0, 0, 0), width=max(2, w // 200))
    for i in range(8):
        x = int(w // 4 + (i + 1) * w / 18)
        draw.line([x, h // 4, x, 3 * h // 4], fill=(0, 0, 0), width=2)
    noise = rng.integers(0, 12, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) - noise, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def jpeg_bytes(size=(800, 600), color=(200, 40, 40), seed: int = 0, **params) -> bytes:
    return encode(product_photo(size, color, seed=seed), "JPEG", quality=90, **params)


def jpeg_with_orientation(size=(800, 400), orientation: int = 6) -> bytes:
    image = product_photo(size)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif.tobytes())


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 60000, height: int = 60000) -> bytes:
    """A tiny PNG whose header claims a gigantic image (decompression-bomb shape)."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    body = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


def png_with_exif_orientation(size=(800, 400), orientation: int = 6, *, after_pixels: bool = False, mode: str = "RGB") -> bytes:
    """A PNG carrying an eXIf chunk with `orientation`, before the pixel data or (as some tools
    write it) after it, where Pillow only sees it once the pixels are decoded."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(product_photo(size).convert(mode), "PNG", exif=exif.tobytes())
    if not after_pixels:
        return data
    chunks, offset = [], 8
    while offset < len(data):
        length = struct.unpack(">I", data[offset : offset + 4])[0]
        chunks.append(data[offset : offset + 12 + length])
        offset += 12 + length
    exif_chunk = next(chunk for chunk in chunks if chunk[4:8] == b"eXIf")
    rest = [chunk for chunk in chunks if chunk is not exif_chunk]
    return data[:8] + b"".join(rest[:-1]) + exif_chunk + rest[-1]  # just before IEND


def big_rgba_png(size=(3000, 2000)) -> bytes:
    """A large, highly compressible RGBA PNG: transparent border, an opaque blue square in the middle."""
    image = Image.new("RGBA", size, (255, 0, 0, 0))
    w, h = size
    image.paste((0, 0, 255, 255), (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    return encode(image, "PNG")
