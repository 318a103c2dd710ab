"""Small previews of the stored (normalized) images for result tables."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image


def thumbnail_jpeg(jpeg: bytes, size: int = 96) -> bytes:
    """A JPEG at most `size` px on its long side."""
    with Image.open(io.BytesIO(jpeg)) as image:
        image.draft("RGB", (size, size))  # decode at reduced scale: the stored JPEG is up to 768 px
        image = image.convert("RGB")
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=70)
    return buffer.getvalue()


def thumbnail_data_uri(image_path: str | None, size: int = 96) -> str | None:
    """A data: URI of the thumbnail of a local image, or None if there is no image."""
    if not image_path or not Path(image_path).is_file():
        return None
    return "data:image/jpeg;base64," + base64.b64encode(thumbnail_jpeg(Path(image_path).read_bytes(), size)).decode("ascii")
