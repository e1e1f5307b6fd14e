"""Page images: decoding files into the pixels the engine reads (Pillow)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageError", "PageImage", "image_dpi", "limit_image_pixels", "load_page_image"]


class ImageError(Exception):
    """A page image cannot be decoded (corrupt, truncated, unsupported or too large)."""


@dataclass(frozen=True)
class PageImage:
    """Decoded pixels of one page, ready for the engine."""

    pixels: np.ndarray
    """``(height, width, 3)`` uint8 array, BGR channel order (OpenCV's)."""
    dpi: float
    """Resolution in dots per inch."""
    source: Path | None = None
    """The file the pixels came from, for messages."""


def limit_image_pixels(max_pixels: int) -> None:
    """Refuse to decode images of more than ``max_pixels`` pixels (decompression bombs).

    Sets Pillow's ``Image.MAX_IMAGE_PIXELS`` and turns its ``DecompressionBombWarning``
    (between 1x and 2x the limit) into an error, for this process.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def load_page_image(path: Path, *, frame: int = 0, default_dpi: float = 300.0) -> PageImage:
    """Decode one page image file, EXIF orientation applied.

    Memory: one decoded copy and one array of ``height x width x 3`` bytes at most at
    once (the channels are swapped in place), since a 9000 x 9000 px page is 243 MB a
    copy (``bench.memory``).

    Args:
        path: JPEG, PNG, TIFF, BMP, WebP or any format Pillow reads.
        frame: Frame of a multi-page TIFF, 0-based.
        default_dpi: DPI to assume when the file states none.

    Returns:
        The page, in BGR pixels, with the file's DPI or ``default_dpi``.

    Raises:
        ImageError: the file is missing, not an image, truncated, has no such frame,
            or exceeds Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``).
    """
    import cv2

    try:
        with Image.open(path) as im:
            im.seek(frame)
            dpi = image_dpi(im, default_dpi)
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
            pixels = np.array(im if im.mode == "RGB" else im.convert("RGB"))
    except EOFError as exc:
        raise ImageError(f"{path}: has no frame {frame}") from exc
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        OSError,
        ValueError,
    ) as exc:
        raise ImageError(f"{path}: cannot read image ({exc})") from exc
    cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR, dst=pixels)
    return PageImage(pixels, dpi, path)


def image_dpi(im: Image.Image, default: float) -> float:
    """The horizontal DPI an image file states, or ``default``."""
    dpi = im.info.get("dpi")
    try:
        value = float(dpi[0]) if dpi else 0.0
    except (TypeError, ValueError):
        value = 0.0
    return value if 1.0 <= value <= 100_000.0 else default
