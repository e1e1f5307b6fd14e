"""Reading order: columns left to right, rows and tables kept, vertical CJK right to left."""

from __future__ import annotations

from daemon.engine import TextLine
from daemon.layout import reading_order


def _line(text: str, x0: float, y0: float, x1: float, y1: float) -> TextLine:
    return TextLine(text, 0.9, ((x0, y0), (x1, y0), (x1, y1), (x0, y1)))


def _texts(lines: list[TextLine]) -> list[str]:
    return [lines[i].text for i in reading_order(lines)]


def test_two_columns_under_a_full_width_title_read_column_by_column():
    lines = [_line("title", 100, 50, 1100, 100)]
    for row in range(6):  # engine order: across both columns, row by row
        y = 200 + row * 50
        lines.append(_line(f"L{row}", 100, y, 560, y + 35))
        lines.append(_line(f"R{row}", 640, y, 1100, y + 35))
    lines.append(_line("footer", 100, 600, 1100, 640))
    assert _texts(lines) == (
        ["title"] + [f"L{r}" for r in range(6)] + [f"R{r}" for r in range(6)] + ["footer"]
    )


def test_a_single_column_keeps_top_to_bottom_order():
    lines = [
        _line(f"line {i}", 100, 100 + i * 40, 900 - (i % 3) * 200, 130 + i * 40) for i in range(10)
    ]
    assert _texts(lines) == [f"line {i}" for i in range(10)]


def test_a_table_of_short_cells_is_read_row_by_row():
    lines = []
    for row in range(5):
        y = 100 + row * 40
        lines += [_line(f"name{row}", 100, y, 220, y + 30), _line(f"{row}.00", 600, y, 680, y + 30)]
    assert _texts(lines) == [t for row in range(5) for t in (f"name{row}", f"{row}.00")]


def test_fragments_of_one_skewed_line_read_left_to_right():
    lines = [
        _line("geweekt", 300, 112, 600, 150),
        _line("ze", 100, 100, 160, 138),
        _line("gieten.", 650, 118, 800, 156),
    ]
    assert _texts(lines) == ["ze", "geweekt", "gieten."]


def test_a_small_line_under_a_tall_one_comes_after_its_row():
    lines = [
        _line("big", 133, 216, 191, 251),
        _line("day", 33, 224, 58, 236),
        _line("10.0", 30, 232, 81, 254),
    ]
    assert _texts(lines) == ["day", "big", "10.0"]


def test_vertical_cjk_columns_read_right_to_left():
    lines = [
        _line("左列", 100, 50, 140, 600),
        _line("右列", 300, 50, 340, 600),
        _line("中列", 200, 50, 240, 600),
    ]
    assert _texts(lines) == ["右列", "中列", "左列"]


def test_every_line_appears_exactly_once():
    lines = [
        _line(str(i), (i * 37) % 900, (i * 53) % 700, (i * 37) % 900 + 80, (i * 53) % 700 + 20)
        for i in range(60)
    ]
    assert sorted(reading_order(lines)) == list(range(60))
