"""Which way up a page reads: the upside-down check and the quarter-turn vote."""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter

import numpy as np

from .images import PageImage
from .results import OcrEngine, OcrResult, TextLine, make_result, turned

__all__ = ["page_rotation", "read_page"]

_ORIENTATION_MIN_LINES = 3
"""Lines a page needs before their confidence or direction says anything about the
page's orientation."""
_UPSIDE_DOWN_MARGIN = 0.1
"""How much higher the turned reading's mean confidence must be to be kept."""


def _mean_confidence(result: OcrResult) -> float:
    return sum(line.confidence for line in result.lines) / max(len(result.lines), 1)


def _read_turned(engine: OcrEngine, image: PageImage, degrees: int) -> OcrResult:
    """Read ``image`` turned ``degrees`` (90, 180 or 270) clockwise; the result's
    polygons are mapped back to the pixels of ``image`` as given."""
    pixels = np.ascontiguousarray(np.rot90(image.pixels, k=-degrees // 90))
    turned_image = dataclasses.replace(image, pixels=pixels)
    reread = make_result(turned_image, engine.recognize(turned_image))
    height, width = image.pixels.shape[:2]
    lines = turned(reread.lines, reread.width, reread.height, 360 - degrees)
    return OcrResult(width, height, image.dpi, lines)


def read_page(engine: OcrEngine, image: PageImage, *, upside_down_confidence: float) -> OcrResult:
    """OCR one page, reading it again turned when it does not read upright, and say how
    the page must be turned to read upright (:func:`page_rotation`).

    A page whose lines say it is turned a quarter (:func:`page_rotation` 90 or 270) is
    read again turned upright (:func:`_read_upright`): the engine reads sideways lines,
    but its text detection, at ``det_limit_side_len`` 1280, missed the large title lines
    of ``pdf/cardinal.pdf``'s sideways pages that it found on the upright one.

    An upside-down page reads as garbage with a low mean line confidence (measured on
    ``pdf/cardinal.pdf``: 0.99 on its upright pages, 0.66 on its upside-down ones). A
    page of at least 3 lines whose mean confidence is below ``upside_down_confidence``
    is read again turned 180 degrees; the turned reading is kept when its mean
    confidence is at least 0.1 higher. Polygons are always mapped back to the image's
    own pixels; pages that read upright are read once.

    Raises:
        EngineOutputError: as :func:`make_result`.
    """
    result = make_result(image, engine.recognize(image))
    rotation = page_rotation(result.lines)
    if rotation in (90, 270):
        return _read_upright(engine, image, result, rotation, upside_down_confidence)
    if _reads_badly(result, upside_down_confidence):
        reread = _read_turned(engine, image, 180)
        if _mean_confidence(reread) >= _mean_confidence(result) + _UPSIDE_DOWN_MARGIN:
            result = dataclasses.replace(result, lines=reread.lines)
            rotation = page_rotation(result.lines)
            if rotation in (90, 270):
                return _read_upright(engine, image, result, rotation, upside_down_confidence)
    return dataclasses.replace(result, rotation=rotation)


def _reads_badly(result: OcrResult, upside_down_confidence: float) -> bool:
    return (
        len(result.lines) >= _ORIENTATION_MIN_LINES
        and _mean_confidence(result) < upside_down_confidence
    )


def _read_upright(
    engine: OcrEngine,
    image: PageImage,
    sideways: OcrResult,
    rotation: int,
    upside_down_confidence: float,
) -> OcrResult:
    """Read a page turned a quarter again, upright; ``sideways`` is its reading as
    given, whose lines say it needs ``rotation`` (90 or 270) degrees.

    A sideways line says which way it runs only by how the engine orders its polygon:
    PaddleOCR reads every line 1.5 times taller than wide as running downwards
    (:func:`~.paddle._text_polygon`). When ``sideways`` reads badly, its lines may run
    the other way, so the page is read turned the other quarter first, and that
    reading is kept if it reads well: a page whose text runs upwards is then read
    twice, not three times (turned 180 degrees only to learn which way it runs). Else
    the page is read turned ``rotation`` too, and of the readings whose own lines run
    left to right (an upside-down reading's lines do too) the one with the higher mean
    confidence is kept; with neither, ``sideways`` stays.
    """
    turns = (360 - rotation, rotation) if _reads_badly(sideways, upside_down_confidence) else ()
    readings = []
    for degrees in turns or (rotation,):
        reread = _read_turned(engine, image, degrees)
        if page_rotation(reread.lines) != degrees:
            continue
        if turns and not _reads_badly(reread, upside_down_confidence):
            return dataclasses.replace(sideways, lines=reread.lines, rotation=degrees)
        readings.append((_mean_confidence(reread), degrees, reread.lines))
    if not readings:
        return dataclasses.replace(sideways, rotation=rotation)
    _, degrees, lines = max(readings, key=lambda reading: reading[0])
    return dataclasses.replace(sideways, lines=lines, rotation=degrees)


_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
"""Kana, CJK ideographs and Hangul syllables: scripts also set in vertical lines."""


def _direction(line: TextLine) -> int:
    """The way the line's text runs, to the nearest quarter turn: 0 (left to right), 90
    (downwards), 180 (right to left, upside down) or 270 (upwards), in image pixels
    with y downwards, taken from the polygon's first (top) edge."""
    (x0, y0), (x1, y1) = line.polygon[0], line.polygon[1]
    return round(math.degrees(math.atan2(y1 - y0, x1 - x0)) / 90) % 4 * 90


def page_rotation(lines: tuple[TextLine, ...]) -> int:
    """Degrees clockwise (0, 90, 180, 270) to turn a page so its text reads left to right.

    The lines vote with their characters for the way their text runs
    (:func:`_direction`); a direction held by more than half the characters of a page of
    at least 3 lines decides: text running downwards (a page turned a quarter clockwise)
    needs 270, upwards 90, upside down 180. Lines running downwards that are mostly
    CJK are vertical writing on an upright page, and decide nothing (a CJK page of
    horizontal lines turned a quarter clockwise therefore stays as it is).

    Args:
        lines: Text lines, polygons in image pixels with their first edge the text's top
            edge (as the engine gives them).
    """
    if len(lines) < _ORIENTATION_MIN_LINES:
        return 0
    votes: Counter[int] = Counter()
    for line in lines:
        votes[_direction(line)] += len(line.text)
    direction, count = votes.most_common(1)[0]
    if count * 2 <= sum(votes.values()):
        return 0
    if direction == 90:
        text = "".join(line.text for line in lines if _direction(line) == 90)
        if len(_CJK.findall(text)) * 2 > len(text):
            return 0
    return (360 - direction) % 360
