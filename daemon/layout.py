"""Reading order of a page's text lines: column by column, the way a person reads.

PaddleOCR returns lines top to bottom across the whole page, which interleaves the
columns of a multi-column page. :func:`reading_order` applies a recursive XY-cut
(Nagy & Seth, "Hierarchical representation of optically scanned documents", 1984) over
the lines' bounding boxes, preferring a cut between columns over a cut between rows,
and accepting a column cut only between blocks of real text lines, so tables and
short-item layouts keep their row order.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import median

from .engine import OcrResult, TextLine

__all__ = ["lines_in_reading_order", "reading_order"]

Box = tuple[float, float, float, float]
"""Axis-aligned bounding box in pixels: ``(x0, y0, x1, y1)``."""

_MIN_COLUMN_LINES = 2
"""Lines each side of a column cut must hold."""
_MIN_LINE_WIDTH = 3.0
"""Median line width each side must reach, in line heights (text, not table cells)."""
_MIN_GUTTER = 0.5
"""Narrowest gap between columns, in line heights."""


def reading_order(lines: Sequence[TextLine]) -> list[int]:
    """Order a page's lines for reading.

    Args:
        lines: Text lines with polygons in pixels.

    Returns:
        Indexes into ``lines``, each once, in reading order. A page with no column
        structure keeps the engine's order; a page whose lines are mostly vertical (CJK
        set top to bottom) reads right to left.
    """
    boxes = [line.bbox for line in lines]
    if len(boxes) < 2:
        return list(range(len(boxes)))
    heights = [b[3] - b[1] for b in boxes]
    widths = [b[2] - b[0] for b in boxes]
    vertical = sum(h > 2 * w for h, w in zip(heights, widths, strict=True))
    if vertical > len(boxes) / 2:
        return sorted(range(len(boxes)), key=lambda i: (-(boxes[i][0] + boxes[i][2]), boxes[i][1]))
    unit = max(median(heights), 1.0)
    return _order(list(range(len(boxes))), boxes, unit)


def lines_in_reading_order(result: OcrResult) -> list[TextLine]:
    """A page's lines (polygons in the image's pixels) in the order a person reads the
    page turned upright (``result.rotation``)."""
    return [result.lines[i] for i in reading_order(result.upright_lines())]


def _order(ids: list[int], boxes: list[Box], unit: float) -> list[int]:
    """XY-cut of ``ids``: columns left to right, else blocks of rows top to bottom,
    else rows top to bottom with each row's lines left to right."""
    if len(ids) < 2:
        return ids
    columns = _column_split(ids, boxes, unit)
    if columns is not None:
        return [i for part in columns for i in _order(part, boxes, unit)]
    rows = _rows(ids, boxes)
    blocks: list[list[int]] = []
    for row in rows:
        if blocks and _gutter(blocks[-1] + row, boxes, unit) is not None:
            blocks[-1] = blocks[-1] + row
        else:
            blocks.append(row)
    if len(blocks) == 1:
        return [i for row in rows for i in sorted(row, key=lambda i: boxes[i][0])]
    return [i for block in blocks for i in _order(block, boxes, unit)]


def _gutter(ids: list[int], boxes: list[Box], unit: float) -> float | None:
    """The x of the widest vertical gap no line crosses, if one is wide enough."""
    spans = sorted((boxes[i][0], boxes[i][2]) for i in ids)
    best, best_width = None, _MIN_GUTTER * unit
    reach = spans[0][1]
    for x0, x1 in spans[1:]:
        if x0 - reach >= best_width:
            best, best_width = (reach + x0) / 2, x0 - reach
        reach = max(reach, x1)
    return best


def _column_split(ids: list[int], boxes: list[Box], unit: float) -> list[list[int]] | None:
    """Split into left and right columns, if the gap separates blocks of text lines."""
    cut = _gutter(ids, boxes, unit)
    if cut is None:
        return None
    left = [i for i in ids if boxes[i][2] <= cut]
    right = [i for i in ids if boxes[i][0] >= cut]
    for side in (left, right):
        if len(side) < _MIN_COLUMN_LINES:
            return None
        if median(boxes[i][2] - boxes[i][0] for i in side) < _MIN_LINE_WIDTH * unit:
            return None
    return [left, right]


def _rows(ids: list[int], boxes: list[Box]) -> list[list[int]]:
    """Group lines into text rows, top first.

    Lines are taken by their top edge; a line joins the current row when it overlaps
    every line already in it by at least half the smaller height (so fragments of one
    skewed line stay together, while a small line under another starts a new row even
    beside a tall one).
    """
    ordered = sorted(ids, key=lambda i: (boxes[i][1], boxes[i][0]))
    rows = [[ordered[0]]]
    for i in ordered[1:]:
        if all(_same_row(boxes[i], boxes[j]) for j in rows[-1]):
            rows[-1].append(i)
        else:
            rows.append([i])
    return rows


def _same_row(a: Box, b: Box) -> bool:
    overlap = min(a[3], b[3]) - max(a[1], b[1])
    return overlap >= 0.5 * min(a[3] - a[1], b[3] - b[1])
