"""normalize.py's header reading and colour rules stated exactly (written from the mutants that survived
tests/test_normalize.py, docs/mutation.md): a PNG's EXIF found by walking chunk headers wherever it sits, an
orientation read or ignored as Pillow would, every mode made RGB with transparency on white, and 16/32-bit
greyscale stretched over the values it uses."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import BadInputError
from pipeline.images.normalize import (
    STRIP_BYTES, _request_draft, bytes_per_pixel, decode_cost, exif_orientation, normalize_image, open_image, png_exif_chunk,
    to_rgb, upright_size,
)
from support.images import jpeg_bytes, png_bomb, png_chunk as chunk

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def exif_payload(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def png(width: int = 4, height: int = 2, *, before: list[bytes] = (), after_pixels: list[bytes] = (), after_end: list[bytes] = ()) -> bytes:
    """A real RGB PNG (Pillow reads it) with extra chunks before the pixels, between the pixels and IEND, or after IEND."""
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    rows = b"".join(b"\x00" + bytes([200, 30, 30]) * width for _ in range(height))
    return SIGNATURE + header + b"".join(before) + chunk(b"IDAT", zlib.compress(rows)) + b"".join(after_pixels) + \
        chunk(b"IEND", b"") + b"".join(after_end)


def test_a_png_exif_chunk_is_found_before_or_after_the_pixels():
    payload = exif_payload(6)
    text = chunk(b"tEXt", b"Comment\x00" + b"x" * 300)  # a chunk longer than 255 bytes: its length is 4 bytes, big-endian
    assert png_exif_chunk(png(before=[text, chunk(b"eXIf", payload)])) == payload
    assert png_exif_chunk(png(before=[text], after_pixels=[chunk(b"tIME", bytes(7)), chunk(b"eXIf", payload)])) == payload


def test_no_exif_chunk_or_one_after_the_end_is_none():
    assert png_exif_chunk(png()) is None
    assert png_exif_chunk(png(after_end=[chunk(b"eXIf", exif_payload(6))])) is None  # past IEND is not part of the image
    assert png_exif_chunk(b"GIF89a" + bytes(20)) is None
    assert png_exif_chunk(SIGNATURE[:-1]) is None


def test_a_chunk_header_that_ends_the_data_is_still_read():
    assert png_exif_chunk(SIGNATURE + struct.pack(">I", 0) + b"eXIf") == b""  # header only, exactly 8 bytes
    assert png_exif_chunk(SIGNATURE + struct.pack(">I", 0) + b"eXI") is None  # not a whole header
    truncated = SIGNATURE + struct.pack(">I", 100) + b"eXIf" + b"abc"
    assert png_exif_chunk(truncated) == b"abc"  # what there is of it


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_a_png_whose_exif_comes_after_the_pixels_is_turned_upright(orientation):
    data = png(4, 2, after_pixels=[chunk(b"eXIf", exif_payload(orientation))])
    image = Image.open(io.BytesIO(data))
    assert exif_orientation(image) == 1  # Pillow's header read has not seen it
    assert exif_orientation(image, data) == orientation
    assert upright_size(image, exif_orientation(image, data)) == (2, 4)
    normalized = normalize_image(data, max_side=64)
    assert (normalized.width, normalized.height) == (2, 4)


@pytest.mark.parametrize(("orientation", "size"), [(1, (4, 2)), (2, (4, 2)), (3, (4, 2)), (4, (4, 2)),
                                                   (5, (2, 4)), (6, (2, 4)), (7, (2, 4)), (8, (2, 4))])
def test_upright_size_swaps_for_orientations_5_to_8_only(orientation, size):
    image = Image.new("RGB", (4, 2))
    assert upright_size(image, orientation) == size


def test_upright_size_reads_the_orientation_when_not_given():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 2)).save(buffer, format="JPEG", exif=exif_payload(8))
    assert upright_size(Image.open(buffer)) == (2, 4)


@pytest.mark.parametrize(("stored", "read"), [(0, 1), (9, 1), (1, 1), (8, 8), (3, 3)])
def test_an_orientation_outside_1_to_8_is_ignored(stored, read):
    buffer = io.BytesIO()
    Image.new("RGB", (4, 2)).save(buffer, format="JPEG", exif=exif_payload(stored))
    assert exif_orientation(Image.open(buffer)) == read
    data = png(after_pixels=[chunk(b"eXIf", exif_payload(stored))])
    assert exif_orientation(Image.open(io.BytesIO(data)), data) == read


def test_a_png_with_exif_in_its_header_info_is_read_from_there():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 2)).save(buffer, format="PNG", exif=exif_payload(6))
    image = Image.open(buffer)
    assert image.info.get("exif") and exif_orientation(image) == 6  # no data needed


def test_malformed_exif_shows_the_photo_as_stored():
    data = png(after_pixels=[chunk(b"eXIf", b"MM\x00*garbage")])
    assert exif_orientation(Image.open(io.BytesIO(data)), data) == 1


def pixel(image: Image.Image) -> tuple:
    return to_rgb(image).getpixel((0, 0))


def test_transparency_is_composited_on_white_in_every_mode_that_has_it():
    assert pixel(Image.new("RGBA", (1, 1), (10, 20, 30, 0))) == (255, 255, 255)
    assert pixel(Image.new("RGBA", (1, 1), (10, 20, 30, 255))) == (10, 20, 30)
    assert pixel(Image.new("LA", (1, 1), (40, 0))) == (255, 255, 255)
    assert pixel(Image.new("LA", (1, 1), (40, 255))) == (40, 40, 40)
    assert pixel(Image.new("RGBA", (1, 1), (10, 20, 30, 0)).convert("RGBa")) == (255, 255, 255)
    for transparent, expected in ((True, (255, 255, 255)), (False, (10, 20, 30))):
        palette = Image.new("P", (1, 1), 0)
        palette.putpalette([10, 20, 30])
        if transparent:
            palette.info["transparency"] = 0
        assert pixel(palette) == expected
    pa = Image.new("RGBA", (1, 1), (10, 20, 30, 0)).convert("PA")
    assert pixel(pa) == (255, 255, 255)


def test_an_rgb_image_is_returned_as_it_is():
    image = Image.new("RGB", (1, 1), (1, 2, 3))
    assert to_rgb(image) is image


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_wide_greyscale_is_stretched_over_the_values_it_uses(mode):
    values = np.array([[1000, 2000, 3000]], dtype=np.float64)
    image = Image.fromarray(values.astype(np.uint16 if mode == "I;16" else np.int32 if mode == "I" else np.float32))
    image = image if image.mode == mode else image.convert(mode)
    assert image.mode == mode
    assert [to_rgb(image).getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (127, 127, 127), (255, 255, 255)]
    # one strip of a larger image: stretched over the whole image's range, not its own
    assert [to_rgb(image, (0.0, 4000.0)).getpixel((x, 0)) for x in range(3)] == [(63, 63, 63), (127, 127, 127), (191, 191, 191)]
    assert [to_rgb(image, (2000.0, 2500.0)).getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (0, 0, 0), (255, 255, 255)]


def test_a_flat_wide_image_is_black_not_an_error():
    flat = Image.fromarray(np.full((1, 3), 1234, dtype=np.uint16))
    assert [to_rgb(flat).getpixel((x, 0)) for x in range(3)] == [(0, 0, 0)] * 3
    assert to_rgb(flat, (5.0, 1.0)).getpixel((0, 0)) == (0, 0, 0)  # extremes the wrong way round: flat too


# What a merchandiser reads when a photo cannot be used: each sentence exactly.

def refusal(data: bytes, **options) -> str:
    with pytest.raises(BadInputError) as refused:
        normalize_image(data, **options)
    return str(refused.value)


def test_each_unusable_file_gets_its_own_exact_sentence():
    assert refusal(b"") == "The file is empty (0 bytes)."
    assert refusal(b"hello, I am a text file") == (
        "This file is not a readable image (supported: JPEG, PNG, WebP, GIF, TIFF, BMP, HEIC).")
    assert refusal(jpeg_bytes()[:2000]) == "The image file is damaged or incomplete and cannot be read."
    assert refusal(png_bomb()) == "The image is too large to process safely (over 50 megapixels)."
    assert refusal(png_bomb(), max_pixels=20_000_000) == "The image is too large to process safely (over 20 megapixels)."


def test_a_header_too_broken_to_open_is_damaged():
    broken = png(4, 2)[:20]  # the signature and half a header
    with pytest.raises(BadInputError) as refused:
        open_image(broken, max_pixels=1000)
    assert str(refused.value) in ("The image file is damaged or incomplete and cannot be read.",
                                  "This file is not a readable image (supported: JPEG, PNG, WebP, GIF, TIFF, BMP, HEIC).")


def test_the_default_pixel_limit_is_50_megapixels_exactly():
    assert refusal(png_bomb(10_000, 5_001)) == "The image is 50 megapixels; the limit is 50."
    assert refusal(png_bomb(10_000, 5_000)) == "The image file is damaged or incomplete and cannot be read."  # let in, then decoded


def test_megapixels_are_rounded_to_whole_ones_of_a_million_pixels():
    assert refusal(png_bomb(1500, 1000), max_pixels=1_499_999) == "The image is 2 megapixels; the limit is 1."
    assert refusal(png_bomb(1501, 1000), max_pixels=1_500_000) == "The image is 2 megapixels; the limit is 2."


@pytest.mark.parametrize("size", [(1, 1), (1, 5), (5, 1)])
def test_one_pixel_wide_or_high_is_still_a_photo(size):
    normalized = normalize_image(jpeg_bytes(size=size))
    assert (normalized.original_width, normalized.original_height) == size


def test_photos_are_re_encoded_at_jpeg_quality_85_by_default():
    """Quality sets the JPEG's quantization tables: the output's tables are those of quality 85."""
    normalized = normalize_image(jpeg_bytes(size=(300, 200)))
    reference = io.BytesIO()
    Image.new("RGB", (8, 8)).save(reference, format="JPEG", quality=85)
    assert Image.open(io.BytesIO(normalized.jpeg)).quantization == Image.open(reference).quantization
    assert normalized.original_bytes == len(jpeg_bytes(size=(300, 200)))


# The memory a decode is charged with (decode_cost, under the decode budget) and the JPEG draft that shrinks it.

@pytest.mark.parametrize(("mode", "size"), [("1", 1), ("L", 1), ("P", 1), ("I;16", 2), ("I;16B", 2), ("RGB", 4),
                                            ("RGBA", 4), ("CMYK", 4), ("I", 4), ("F", 4), ("LA", 4)])
def test_bytes_per_pixel_is_what_pillow_stores(mode, size):
    assert bytes_per_pixel(mode) == size


def jpeg(size: tuple[int, int], **options) -> Image.Image:
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 60, 30)).save(buffer, format="JPEG", **options)
    return Image.open(io.BytesIO(buffer.getvalue()))


def test_a_small_photo_costs_its_pixels_and_three_whole_rgba_copies():
    image = Image.new("L", (1000, 500))
    assert decode_cost(image, image.size, 768) == 1000 * 500 * 1 + 3 * 1000 * 500 * 4


def test_a_large_photo_costs_its_pixels_four_strips_and_the_reduced_copy():
    image = Image.new("RGB", (3001, 1000))  # reduced 3x (3001 // 768): 1001 x 334 after rounding up
    assert decode_cost(image, image.size, 768) == 3001 * 1000 * 4 + 4 * STRIP_BYTES + 1001 * 334 * 4


def test_a_progressive_jpeg_also_costs_every_dct_coefficient_of_its_stored_size():
    """libjpeg keeps 64 two-byte coefficients per 8x8 block of each component, at that component's sampling:
    4:2:0 has one full-size luma plane and two chroma planes at half width and half height."""
    baseline = jpeg((800, 600), subsampling=2)
    progressive = jpeg((800, 600), subsampling=2, progressive=True)
    blocks = 100 * 75 + 2 * (50 * 38)  # luma 800x600, chroma 400x300 (38 rows of blocks: 37.5 rounded up)
    assert decode_cost(progressive, progressive.size, 768) - decode_cost(baseline, baseline.size, 768) == blocks * 64 * 2
    full = jpeg((800, 600), subsampling=0, progressive=True)  # 4:4:4: three full-size planes
    assert decode_cost(full, full.size, 768) - decode_cost(baseline, baseline.size, 768) == 3 * 100 * 75 * 128
    # the stored size, not the drafted one: a draft does not shrink the coefficients libjpeg keeps
    assert decode_cost(progressive, (1600, 1200), 768) - decode_cost(baseline, baseline.size, 768) == (200 * 150 + 2 * 100 * 75) * 128


def test_a_large_jpeg_is_drafted_to_the_smallest_scale_still_at_least_max_side():
    image = jpeg((4000, 3000))
    _request_draft(image, 768)
    assert image.size == (1000, 750)  # 1/4; 1/8 would be 500 wide, under 768
    tall = jpeg((1200, 3100))
    _request_draft(tall, 768)
    assert tall.size == (300, 775)  # the longest side decides
    exact = jpeg((1536, 1000))
    _request_draft(exact, 768)
    assert exact.size == (768, 500)  # exactly max_side is enough
    small = jpeg((768, 500))
    _request_draft(small, 768)
    assert small.size == (768, 500)
    assert small.mode == "RGB"


def test_only_jpegs_are_drafted():
    buffer = io.BytesIO()
    Image.new("RGB", (4000, 3000)).save(buffer, format="PNG")
    image = Image.open(buffer)
    _request_draft(image, 768)
    assert image.size == (4000, 3000)


def test_a_large_jpeg_reports_its_stored_size_and_comes_out_at_max_side():
    buffer = io.BytesIO()
    Image.new("RGB", (4000, 3000), (120, 60, 30)).save(buffer, format="JPEG")
    normalized = normalize_image(buffer.getvalue(), max_side=768)
    assert (normalized.original_width, normalized.original_height) == (4000, 3000)
    assert (normalized.width, normalized.height) == (768, 576)


def test_exif_that_cannot_be_parsed_shows_the_photo_as_stored():
    data = png(after_pixels=[chunk(b"eXIf", b"Exif\x00\x00MM")])  # Pillow's EXIF reader raises on this
    assert exif_orientation(Image.open(io.BytesIO(data)), data) == 1
    assert png_exif_chunk(data) == b"Exif\x00\x00MM"


def test_one_pixel_over_the_default_limit_is_refused():
    assert refusal(png_bomb(3, 16_666_667)) == "The image is 50 megapixels; the limit is 50."  # 50,000,001 pixels


def test_a_progressive_jpeg_is_normalized_with_its_coefficients_counted():
    buffer = io.BytesIO()
    Image.new("RGB", (2000, 1000), (20, 90, 200)).save(buffer, format="JPEG", progressive=True)
    normalized = normalize_image(buffer.getvalue(), max_side=768)
    assert (normalized.width, normalized.height) == (768, 384)
    assert len(normalized.phash) == 16 and int(normalized.phash, 16) >= 0  # the near-duplicate hash is made


def test_reduce_factor_is_the_largest_whole_factor_keeping_max_side():
    from pipeline.images.normalize import reduce_factor

    assert [reduce_factor((w, 10), 768) for w in (767, 768, 1535, 1536, 2304)] == [1, 1, 1, 2, 3]
    assert reduce_factor((10, 5), 1) == 10 and reduce_factor((10, 5), 0) == 10


def wide_photo(width: int, height: int, bright_rows: int, bright_cols: int) -> Image.Image:
    """16-bit greyscale: dark (1000) except a bright (3000) band of the first rows and the first columns."""
    values = np.full((height, width), 1000, dtype=np.uint16)
    values[:bright_rows, :] = 3000
    values[:, :bright_cols] = 3000
    return Image.fromarray(values)


def test_a_large_wide_image_is_reduced_in_strips_against_the_whole_images_range():
    from pipeline.images.normalize import shrink_to_rgb

    image = wide_photo(3000, 1500, bright_rows=3, bright_cols=3)
    image.load()
    out = shrink_to_rgb(image, 768)  # factor 3, strips of 699 rows
    assert out.size == (1000, 500) and out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((5, 0)) == (255, 255, 255)  # first rows, first columns
    assert out.getpixel((0, 5)) == (255, 255, 255)  # the first columns, below the first rows
    assert out.getpixel((5, 5)) == (0, 0, 0) and out.getpixel((999, 499)) == (0, 0, 0)
    bottom = np.full((1500, 3000), 1000, dtype=np.uint16)
    bottom[1000:, :] = 3000  # the last strip alone is flat: only the whole image's range makes it white
    out = shrink_to_rgb(Image.fromarray(bottom), 768)
    assert out.getpixel((500, 499)) == (255, 255, 255) and out.getpixel((500, 0)) == (0, 0, 0)


def test_an_image_under_twice_max_side_is_converted_whole_not_reduced():
    from pipeline.images.normalize import shrink_to_rgb

    image = Image.new("L", (1535, 10), 40)
    out = shrink_to_rgb(image, 768)
    assert out.size == (1535, 10) and out.getpixel((0, 0)) == (40, 40, 40)
    two = shrink_to_rgb(Image.new("L", (1536, 10), 40), 768)
    assert two.size == (768, 5)


def test_coefficients_count_partial_blocks_and_4_2_2_sampling():
    baseline = jpeg((801, 600), subsampling=2)
    odd = jpeg((801, 600), subsampling=2, progressive=True)  # 801 px: 101 luma blocks across, 51 chroma (400.5 px)
    assert decode_cost(odd, odd.size, 768) - decode_cost(baseline, baseline.size, 768) == (101 * 75 + 2 * 51 * 38) * 128
    flat = jpeg((800, 600), subsampling=1)
    half_width = jpeg((800, 600), subsampling=1, progressive=True)  # 4:2:2: chroma at half width, full height
    assert decode_cost(half_width, half_width.size, 768) - decode_cost(flat, flat.size, 768) == (100 * 75 + 2 * 50 * 75) * 128


def test_a_camera_mpo_is_drafted_like_a_jpeg():
    buffer = io.BytesIO()
    first, second = Image.new("RGB", (4000, 3000), (90, 40, 40)), Image.new("RGB", (4000, 3000), (40, 40, 90))
    first.save(buffer, format="MPO", save_all=True, append_images=[second])
    image = Image.open(io.BytesIO(buffer.getvalue()))
    assert image.format == "MPO"
    _request_draft(image, 768)
    assert image.size == (1000, 750)


def test_a_format_pillow_reads_but_the_pipeline_does_not_is_named():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 2)).save(buffer, format="PCX")
    assert refusal(buffer.getvalue()) == "Image format PCX is not supported (use JPEG, PNG, WebP, GIF, TIFF, BMP or HEIC)."


def test_the_bomb_sentence_rounds_the_limit_to_whole_megapixels():
    assert refusal(png_bomb(), max_pixels=1_500_000) == "The image is too large to process safely (over 2 megapixels)."
