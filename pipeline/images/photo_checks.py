"""Cheap checks a merchandiser cares about, computed on the already-shrunk RGB image."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.models import PhotoChecks

MIN_SIDE = 400  # below this on the original, listings look poor
BLUR_THRESHOLD = 60.0  # variance of Laplacian on the <=768 px image
DARK_THRESHOLD = 50.0
BRIGHT_THRESHOLD = 240.0
PLAIN_BORDER_STD = 14.0
WHITE_BORDER_MEAN = 235.0

# Reference colours for naming; names a merchandiser would type into a tag.
COLOR_NAMES: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "grey": (128, 128, 128),
    "silver": (192, 192, 192),
    "red": (200, 30, 30),
    "maroon": (120, 20, 30),
    "orange": (240, 130, 30),
    "yellow": (240, 220, 40),
    "beige": (225, 205, 165),
    "brown": (125, 80, 40),
    "olive": (120, 120, 40),
    "green": (40, 150, 60),
    "teal": (20, 130, 130),
    "blue": (40, 90, 200),
    "navy": (20, 30, 90),
    "purple": (120, 50, 150),
    "pink": (240, 150, 180),
}


def compute_photo_checks(image: Image.Image, *, original_size: tuple[int, int]) -> PhotoChecks:
    rgb = np.asarray(image.convert("RGB"))
    luma = np.asarray(image.convert("L"), dtype=np.float32)  # Pillow's C conversion: ITU-R 601 luma
    blur = laplacian_variance(luma)
    brightness = float(luma.mean())
    border = np.ascontiguousarray(border_pixels(rgb).T)  # (3, N): per-channel reductions run on contiguous rows
    border_std = float(border.std(axis=1).mean())
    plain = border_std < PLAIN_BORDER_STD
    width, height = original_size
    return PhotoChecks(
        width=width,
        height=height,
        too_small=min(width, height) < MIN_SIDE,
        blur_score=round(blur, 1),
        blurry=blur < BLUR_THRESHOLD,
        brightness=round(brightness, 1),
        too_dark=brightness < DARK_THRESHOLD,
        too_bright=brightness > BRIGHT_THRESHOLD and float(luma.std()) < 20.0,  # washed out, not just a white backdrop
        plain_background=plain,
        white_background=plain and bool((border.mean(axis=1) > WHITE_BORDER_MEAN).all()),
        dominant_colors=dominant_colors(image),
    )


def laplacian_variance(luma: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: the standard cheap sharpness score."""
    if luma.shape[0] < 3 or luma.shape[1] < 3:
        return 0.0
    centre = luma[1:-1, 1:-1]
    lap = luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4.0 * centre
    return float(lap.var())


def border_pixels(rgb: np.ndarray) -> np.ndarray:
    """The outer 5% frame of the image as an (N, 3) array: where the background shows."""
    height, width = rgb.shape[:2]
    band = max(1, min(height, width) // 20)
    parts = [rgb[:band].reshape(-1, 3), rgb[-band:].reshape(-1, 3), rgb[:, :band].reshape(-1, 3), rgb[:, -band:].reshape(-1, 3)]
    return np.concatenate(parts).astype(np.float32)


def dominant_colors(image: Image.Image, count: int = 3) -> list[str]:
    """Top named colours by pixel share, from a small median-cut palette."""
    small = image.convert("RGB")
    small.thumbnail((64, 64))
    quantized = small.quantize(colors=6, method=Image.Quantize.MEDIANCUT)
    palette = quantized.getpalette() or []
    shares: dict[str, int] = {}
    for pixels, index in quantized.getcolors() or []:
        rgb = tuple(palette[index * 3 : index * 3 + 3])
        name = nearest_color_name(rgb)  # type: ignore[arg-type]
        shares[name] = shares.get(name, 0) + pixels
    return [name for name, _ in sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))[:count]]


def nearest_color_name(rgb: tuple[int, int, int]) -> str:
    """Nearest reference colour by the 'redmean' weighted distance (closer to perception than plain RGB)."""
    r, g, b = rgb

    def distance(ref: tuple[int, int, int]) -> float:
        rr, gg, bb = ref
        mean_r = (r + rr) / 2
        return (2 + mean_r / 256) * (r - rr) ** 2 + 4 * (g - gg) ** 2 + (2 + (255 - mean_r) / 256) * (b - bb) ** 2

    return min(COLOR_NAMES, key=lambda name: distance(COLOR_NAMES[name]))
