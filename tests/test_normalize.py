import hashlib
import io

import pillow_heif
import pytest
from PIL import Image

from pipeline.errors import BadInputError
from pipeline.images.normalize import normalize_image
from support.images import encode, jpeg_bytes, jpeg_with_orientation, png_bomb, product_photo


def decoded(jpeg: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(jpeg))
    image.load()
    return image


def test_large_jpeg_is_shrunk_to_max_side_and_reencoded():
    result = normalize_image(jpeg_bytes(size=(4000, 3000)), max_side=768)
    image = decoded(result.jpeg)
    assert image.format == "JPEG" and image.mode == "RGB"
    assert max(image.size) == 768 and image.size == (result.width, result.height) == (768, 576)
    assert (result.original_width, result.original_height) == (4000, 3000)
    assert result.content_key == hashlib.sha256(result.jpeg).hexdigest()


def test_small_image_is_not_enlarged():
    result = normalize_image(jpeg_bytes(size=(300, 200)), max_side=768)
    assert (result.width, result.height) == (300, 200)


def test_same_photo_gives_same_content_key_and_different_photo_a_different_one():
    first = normalize_image(jpeg_bytes(seed=1))
    assert normalize_image(jpeg_bytes(seed=1)).content_key == first.content_key
    assert normalize_image(jpeg_bytes(seed=2)).content_key != first.content_key


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotation_is_applied(orientation):
    result = normalize_image(jpeg_with_orientation((800, 400), orientation))
    assert (result.width, result.height) == (384, 768)  # upright: portrait, longest side 768
    assert (result.original_width, result.original_height) == (400, 800)


def test_transparent_png_is_composited_on_white():
    image = Image.new("RGBA", (200, 200), (255, 0, 0, 0))
    image.paste((0, 0, 255, 255), (50, 50, 150, 150))
    result = decoded(normalize_image(encode(image, "PNG")).jpeg)
    corner, centre = result.getpixel((5, 5)), result.getpixel((100, 100))
    assert min(corner) > 245  # white where it was transparent
    assert centre[2] > 200 and centre[0] < 60


@pytest.mark.parametrize(
    "make",
    [
        lambda: product_photo().convert("CMYK"),
        lambda: product_photo().convert("P"),
        lambda: product_photo().convert("LA"),
        lambda: product_photo().convert("L"),
        lambda: product_photo().convert("1"),
        lambda: product_photo().convert("I;16"),
    ],
    ids=["cmyk", "palette", "la", "grey", "bilevel", "16bit"],
)
def test_every_mode_becomes_rgb(make):
    image = make()
    fmt = "TIFF" if image.mode in ("CMYK", "I;16") else "PNG"
    result = decoded(normalize_image(encode(image, fmt)).jpeg)
    assert result.mode == "RGB" and result.size == (768, 576)


def test_16bit_greyscale_keeps_contrast():
    array_image = Image.linear_gradient("L").resize((256, 256)).convert("I")
    wide = array_image.point(lambda v: v * 256).convert("I;16")
    result = decoded(normalize_image(encode(wide, "PNG")).jpeg).convert("L")
    assert result.getextrema()[1] - result.getextrema()[0] > 200


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_other_formats_are_read(fmt):
    result = normalize_image(encode(product_photo((640, 480)), fmt))
    assert (result.width, result.height) == (640, 480)


def test_gif_uses_first_frame():
    frames = [Image.new("RGB", (100, 100), (255, 0, 0)), Image.new("RGB", (100, 100), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    pixel = decoded(normalize_image(buffer.getvalue()).jpeg).getpixel((50, 50))
    assert pixel[0] > 200 and pixel[2] < 60


def test_heic_iphone_photo_is_read():
    heif = pillow_heif.from_pillow(product_photo((640, 480)))
    buffer = io.BytesIO()
    heif.save(buffer, quality=80)
    result = normalize_image(buffer.getvalue())
    assert (result.width, result.height) == (640, 480)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"hello, I am a text file", "not a readable image"),
        (jpeg_bytes()[:2000], "damaged"),
        (png_bomb(), "megapixels"),
    ],
    ids=["zero-bytes", "text", "truncated", "decompression-bomb"],
)
def test_bad_images_raise_clear_errors(data, message):
    with pytest.raises(BadInputError, match=message):
        normalize_image(data)


def test_images_over_max_pixels_are_refused_before_decoding():
    # 56 MP: over the project's 50 MP default, under Pillow's own ~89 MP bomb warning, so only the
    # project's MAX_PIXELS check can refuse it (a header-only PNG: nothing is decoded either way).
    over_default = png_bomb(8000, 7000)
    with pytest.raises(BadInputError) as refused:
        normalize_image(over_default)
    assert str(refused.value) == "The image is 56 megapixels; the limit is 50."
    # The limit is the caller's setting (MAX_PIXELS): at exactly the limit it is read, one pixel more is refused.
    photo = jpeg_bytes(size=(1000, 800))
    assert normalize_image(photo, max_pixels=800_000).original_width == 1000
    with pytest.raises(BadInputError, match=r"^The image is 1 megapixels; the limit is 1\.$"):
        normalize_image(photo, max_pixels=799_999)


def test_photo_checks_flag_problems():
    sharp = normalize_image(jpeg_bytes(size=(1200, 900))).checks
    assert not sharp.blurry and sharp.white_background and sharp.plain_background and not sharp.too_small
    assert sharp.dominant_colors[0] == "white" and "red" in sharp.dominant_colors

    blurry = normalize_image(encode(Image.new("RGB", (900, 900), (120, 120, 120)), "JPEG")).checks
    assert blurry.blurry

    dark = normalize_image(encode(Image.new("RGB", (900, 900), (10, 10, 12)), "JPEG")).checks
    assert dark.too_dark and "too dark" in dark.warnings()

    small = normalize_image(jpeg_bytes(size=(200, 150))).checks
    assert small.too_small and "small photo (200x150)" in small.warnings()

    busy = normalize_image(encode(Image.effect_noise((900, 900), 80).convert("RGB"), "JPEG")).checks
    assert not busy.plain_background and "busy background" in busy.warnings()


def test_large_transparent_png_is_reduced_in_strips_on_white():
    from support.images import big_rgba_png

    result = normalize_image(big_rgba_png((3000, 2000)))  # factor 3: the strip path
    image = decoded(result.jpeg)
    assert (result.width, result.height) == (768, 512) and (result.original_width, result.original_height) == (3000, 2000)
    corner, centre, edge = image.getpixel((5, 5)), image.getpixel((384, 256)), image.getpixel((384, 5))
    assert min(corner) > 245 and min(edge) > 245  # transparent -> white in every strip
    assert centre[2] > 200 and centre[0] < 60
