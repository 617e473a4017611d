"""Decoding images of any format, mode and size into 48x48 grayscale faces, the same way everywhere."""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fercore.errors import UserError

FACE_SIZE = 48
MAX_IMAGE_PIXELS = 40_000_000  # larger claims are refused before decoding (decompression bombs)
JPEG_REDUCTIONS = (2, 4, 8)  # scales the JPEG decoder can skip to, so larger JPEG photos decode within the limit
MAX_JPEG_PIXELS = MAX_IMAGE_PIXELS * JPEG_REDUCTIONS[-1] ** 2  # a JPEG that fits MAX_IMAGE_PIXELS at 1/8 scale
MAX_WORK_SIDE = 1600  # photos are downscaled to this longest side before detection

ImageSource = str | Path | bytes | BinaryIO

# Our own pixel limit is checked right after opening (JPEGs over it are decoded at a reduced scale); Pillow's
# warning for the range between its limits would only add noise (warnings.catch_warnings per image is not
# thread-safe, so no local filter).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
Image.MAX_IMAGE_PIXELS = MAX_JPEG_PIXELS // 2  # Pillow refuses twice this on open


class ImageError(UserError):
    """An image that cannot be decoded, with the reason in one line."""


def open_photo(source: ImageSource) -> tuple[Image.Image, int]:
    """Open an image (first frame), refuse pixel bombs, apply EXIF orientation and load it fully; returns it
    and its reduction: a JPEG over MAX_IMAGE_PIXELS (a 50-200 MP photo) is decoded at 1/2, 1/4 or 1/8 scale
    (JPEG_REDUCTIONS), which its decoder does cheaply; 1 for every other image."""
    if isinstance(source, bytes) and not source:
        raise ImageError("empty file")
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        img = Image.open(stream)
        width, height = img.size
        if width < 1 or height < 1:
            raise ImageError("image has no pixels")
        reduction = 1
        if width * height > MAX_IMAGE_PIXELS and img.format == "JPEG":
            reduction = next((r for r in JPEG_REDUCTIONS if width * height <= MAX_IMAGE_PIXELS * r * r), 0)
            if reduction:
                img.draft(img.mode, (-(-width // reduction), -(-height // reduction)))
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise ImageError(f"image is {width}x{height} pixels, over the limit of {MAX_IMAGE_PIXELS:,}"
                             + (f" ({MAX_JPEG_PIXELS:,} for JPEG)" if img.format == "JPEG" else ""))
        img.seek(0)
        img.load()
        if "exif" in img.info or img.format in ("TIFF", "MPO"):  # only these can carry an orientation
            img = ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"image claims more than {MAX_IMAGE_PIXELS:,} pixels (decompression bomb?)") from None
    except UnidentifiedImageError:
        raise ImageError("not an image file (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"cannot decode image: {exc}") from None
    return img, reduction


def open_image(source: ImageSource) -> Image.Image:
    """open_photo's image: for faces, and for photos whose boxes are drawn on the image as opened."""
    return open_photo(source)[0]


HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I", "F")  # 16/32-bit integer and float pixels


def _to_8bit(img: Image.Image) -> Image.Image:
    """An 8-bit image (L, RGB, ...): high-depth pixels stretched over their own range (Pillow would clip them),
    transparency composited on white."""
    if img.mode in HIGH_DEPTH_MODES:
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return Image.fromarray(((arr - lo) * scale).round().astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img


def to_gray(img: Image.Image) -> np.ndarray:
    """Any Pillow image to a uint8 grayscale array."""
    img = _to_8bit(img)
    if img.mode != "L":
        img = img.convert("RGB").convert("L")
    return np.asarray(img, dtype=np.uint8)


def as_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow image as an 8-bit RGB image, its pixels read the way to_gray reads them."""
    img = _to_8bit(img)
    return img if img.mode == "RGB" else img.convert("RGB")


def to_face(gray: np.ndarray) -> np.ndarray:
    """Resize a grayscale crop to 48x48 (antialiased bilinear), the one resize used everywhere."""
    if gray.shape == (FACE_SIZE, FACE_SIZE):
        return np.ascontiguousarray(gray, dtype=np.uint8)
    resized = Image.fromarray(gray).resize((FACE_SIZE, FACE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def decode_face(source: ImageSource) -> np.ndarray:
    """An image file (already a face crop) to a 48x48 uint8 array."""
    return to_face(to_gray(open_image(source)))


def downscale(img: Image.Image, max_side: int = MAX_WORK_SIDE) -> tuple[Image.Image, float]:
    """Shrink a photo so its longest side is at most max_side; returns the image and the scale used."""
    longest = max(img.size)
    if longest <= max_side:
        return img, 1.0
    scale = max_side / longest
    new_size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(new_size, Image.Resampling.BILINEAR, reducing_gap=2.0), scale
