"""Decoding single images: formats, orientation, bombs and broken files."""
from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from conftest import jpeg_bytes
from PIL import Image

from fercore.data.images import ImageError, decode_face, downscale, open_image


def test_exif_rotation_is_honoured() -> None:
    tall = np.zeros((80, 40), np.uint8)
    tall[:10] = 255  # a bright band at the top
    img = Image.fromarray(tall)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", exif=exif)
    opened = open_image(buffer.getvalue())
    assert opened.size == (80, 40)
    assert np.asarray(opened.convert("L"))[:, -10:].mean() > 200  # the band is now on the right


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"hello, I am text", "not an image"),
])
def test_garbage_is_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        decode_face(data)


def test_truncated_jpeg_is_a_clear_error() -> None:
    whole = jpeg_bytes(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8))
    with pytest.raises(ImageError):
        decode_face(whole[: len(whole) // 3])


def test_decompression_bomb_is_refused_without_decoding() -> None:
    header = io.BytesIO()
    Image.new("L", (1, 1)).save(header, "PNG")
    data = bytearray(header.getvalue())
    data[16:24] = (60000).to_bytes(4, "big") + (60000).to_bytes(4, "big")  # IHDR width and height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    with pytest.raises(ImageError, match="over the limit|decompression bomb"):
        open_image(bytes(data))


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("L", (48, 48), v) for v in (10, 240)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    assert decode_face(buffer.getvalue()).mean() < 50


def test_transparent_pixels_become_white() -> None:
    rgba = np.zeros((48, 48, 4), np.uint8)  # fully transparent black
    assert decode_face(jpeg_bytes(rgba, "PNG")).min() == 255


def test_huge_photo_is_downscaled() -> None:
    img = Image.new("RGB", (6000, 5000))
    small, scale = downscale(img)
    assert max(small.size) == 1600 and scale == pytest.approx(1600 / 6000)
