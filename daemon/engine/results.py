"""What the engine gives back: text lines with polygons, and one page's result.

Plain data, cheap to import anywhere (the store, the PDF and sidecar writers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from .images import PageImage

__all__ = [
    "EngineOutputError",
    "OcrEngine",
    "OcrResult",
    "Point",
    "TextLine",
    "make_result",
    "turned",
]

Point = tuple[float, float]
"""A point in source-image pixels: ``(x, y)``, origin top-left, y downwards."""


class EngineOutputError(Exception):
    """The engine returned data that cannot be a text line (NaN or degenerate polygon)."""


@dataclass(frozen=True)
class TextLine:
    """One recognised text line."""

    text: str
    """The recognised text."""
    confidence: float
    """Recognition score, 0.0 to 1.0."""
    polygon: tuple[Point, Point, Point, Point]
    """Four corners in source-image pixels: top-left, top-right, bottom-right,
    bottom-left as the text reads (PaddleOCR's order)."""

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """Axis-aligned bounding box of the polygon: ``(x0, y0, x1, y1)`` in pixels."""
        xs = [p[0] for p in self.polygon]
        ys = [p[1] for p in self.polygon]
        return min(xs), min(ys), max(xs), max(ys)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form: ``{"text", "confidence", "polygon": [[x, y] * 4]}``."""
        return {
            "text": self.text,
            "confidence": self.confidence,
            "polygon": [list(p) for p in self.polygon],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextLine:
        """Inverse of :meth:`to_dict`."""
        polygon = tuple((float(x), float(y)) for x, y in data["polygon"])
        return cls(data["text"], float(data["confidence"]), polygon)  # type: ignore[arg-type]


@dataclass(frozen=True)
class OcrResult:
    """The OCR of one page image."""

    width: int
    """Image width in pixels (after EXIF orientation)."""
    height: int
    """Image height in pixels (after EXIF orientation)."""
    dpi: float
    """Resolution of the image in dots per inch (the configured default when the file
    states none)."""
    lines: tuple[TextLine, ...]
    """Text lines in the engine's reading order (top to bottom)."""
    device: str | None = None
    """The device slot that read the page (``gpu:1``), when read by a worker pool."""
    seconds: float | None = None
    """Seconds the worker spent on the page (decoding and OCR, not the time it waited
    in a queue), when read by a worker pool."""
    rotation: int = 0
    """Degrees clockwise the page must be turned to read upright: ``0``, ``90``, ``180``
    or ``270`` (see :func:`page_rotation`). Polygons stay in the image's own pixels."""

    def upright_lines(self) -> tuple[TextLine, ...]:
        """The lines with their polygons on the page turned upright (``rotation``), for
        laying them out as a person reads them."""
        if not self.rotation:
            return self.lines
        return turned(self.lines, self.width, self.height, self.rotation)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form, as stored in the state database and sidecars."""
        return {
            "width": self.width,
            "height": self.height,
            "dpi": self.dpi,
            "lines": [line.to_dict() for line in self.lines],
            "device": self.device,
            "seconds": self.seconds,
            "rotation": self.rotation,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OcrResult:
        """Inverse of :meth:`to_dict`."""
        lines = tuple(TextLine.from_dict(d) for d in data["lines"])
        return cls(
            int(data["width"]),
            int(data["height"]),
            float(data["dpi"]),
            lines,
            data.get("device"),
            data.get("seconds"),
            int(data.get("rotation", 0)),
        )


def turned(
    lines: tuple[TextLine, ...], width: int, height: int, degrees: int
) -> tuple[TextLine, ...]:
    """``lines`` of a ``width`` x ``height`` pixel page, on that page turned ``degrees``
    (90, 180 or 270) clockwise: ``(x, y)`` goes to ``(height - y, x)``, ``(width - x,
    height - y)`` or ``(y, width - x)``. Each polygon keeps its corner order, so its first
    edge stays the text's top edge."""
    turn = {
        90: lambda x, y: (height - y, x),
        180: lambda x, y: (width - x, height - y),
        270: lambda x, y: (y, width - x),
    }[degrees]
    return tuple(
        TextLine(
            line.text,
            line.confidence,
            tuple(turn(x, y) for x, y in line.polygon),  # type: ignore[arg-type]
        )
        for line in lines
    )


class OcrEngine(Protocol):
    """What a worker needs from an engine: pixels in, text lines out."""

    def recognize(self, image: PageImage) -> list[TextLine]:
        """Return the text lines of ``image`` in reading order."""
        ...


def make_result(image: PageImage, lines: list[TextLine]) -> OcrResult:
    """Check an engine's lines and bind them to the image size.

    Polygon corners are clamped to the image; text is stripped of leading and trailing
    spaces, and a line left empty is dropped.

    Raises:
        EngineOutputError: a corner or confidence is NaN or infinite.
    """
    height, width = image.pixels.shape[:2]
    kept = []
    for line in lines:
        values = [c for p in line.polygon for c in p] + [line.confidence]
        if len(line.polygon) != 4 or not all(math.isfinite(v) for v in values):
            raise EngineOutputError(f"engine returned a bad polygon or score: {line!r}")
        text = line.text.strip()
        if not text:
            continue
        polygon = tuple(
            (min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height)))
            for x, y in line.polygon
        )
        kept.append(TextLine(text, line.confidence, polygon))  # type: ignore[arg-type]
    return OcrResult(width, height, image.dpi, tuple(kept))
