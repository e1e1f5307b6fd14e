"""Sidecars: text, JSON, hOCR and ALTO carry every line with its coordinates."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import PurePosixPath

import pymupdf
import pytest

from daemon.config import Sidecar
from daemon.engine import OcrResult, TextLine
from daemon.pdf import PageSource, PdfPage, assemble_pdf
from daemon.sidecars import render_sidecar, write_sidecars

ALTO = "{http://www.loc.gov/standards/alto/ns-v4#}"


def _line(text, x0, y0, x1, y1, conf=0.9):
    return TextLine(text, conf, ((x0, y0), (x1, y0), (x1, y1), (x0, y1)))


PAGES = [
    OcrResult(
        1000,
        800,
        300.0,
        (_line("First <line> & more", 10, 20, 500, 60), _line("正品促销", 10, 100, 300, 150, 0.5)),
    ),
    None,
    OcrResult(600, 400, 150.0, (_line("last", 5, 5, 100, 40),)),
]


def test_txt_holds_lines_in_order_with_form_feeds_between_pages():
    text = render_sidecar(Sidecar.txt, PAGES, title="doc")
    assert text == "First <line> & more\n正品促销\n\f\flast\n"


def test_json_holds_every_page_with_size_and_polygons():
    data = json.loads(render_sidecar(Sidecar.json, PAGES, title="doc"))
    assert data["pages"][1] is None
    first = data["pages"][0]
    assert (first["width"], first["height"], first["dpi"]) == (1000, 800, 300.0)
    assert first["lines"][1] == {
        "text": "正品促销",
        "confidence": 0.5,
        "polygon": [[10, 100], [300, 100], [300, 150], [10, 150]],
    }


def test_hocr_parses_and_carries_every_line_with_its_bbox():
    root = ET.fromstring(render_sidecar(Sidecar.hocr, PAGES, title="doc"))
    ns = "{http://www.w3.org/1999/xhtml}"
    pages = root.findall(f".//{ns}div[@class='ocr_page']")
    assert [p.get("title") for p in pages] == [
        "bbox 0 0 1000 800; ppageno 0",
        "bbox 0 0 0 0; ppageno 1",
        "bbox 0 0 600 400; ppageno 2",
    ]
    lines = root.findall(f".//{ns}span[@class='ocr_line']")
    assert [("".join(line.itertext()), line.get("title")) for line in lines] == [
        ("First <line> & more", "bbox 10 20 500 60"),
        ("正品促销", "bbox 10 100 300 150"),
        ("last", "bbox 5 5 100 40"),
    ]
    word = root.find(f".//{ns}span[@class='ocrx_word']")
    assert re.search(r"x_wconf 90$", word.get("title"))


def test_alto_parses_and_carries_every_line_with_pixel_geometry():
    root = ET.fromstring(render_sidecar(Sidecar.alto, PAGES, title="doc"))
    assert root.find(f"{ALTO}Description/{ALTO}MeasurementUnit").text == "pixel"
    pages = root.findall(f".//{ALTO}Page")
    assert [(p.get("WIDTH"), p.get("HEIGHT")) for p in pages] == [
        ("1000", "800"),
        ("0", "0"),
        ("600", "400"),
    ]
    strings = root.findall(f".//{ALTO}String")
    assert [
        (s.get("CONTENT"), s.get("HPOS"), s.get("VPOS"), s.get("WIDTH"), s.get("HEIGHT"))
        for s in strings
    ] == [
        ("First <line> & more", "10", "20", "490", "40"),
        ("正品促销", "10", "100", "290", "50"),
        ("last", "5", "5", "95", "35"),
    ]


def test_an_upside_down_page_reads_upright_and_says_it_is_turned():
    # two lines of a 600 x 400 px page fed in upside down: "top" is the first line read,
    # but lies lower in the image's own pixels (its polygon turned 180 degrees)
    def turned(text, x0, y0, x1, y1):
        return TextLine(
            text,
            0.9,
            (
                (600 - x0, 400 - y0),
                (600 - x1, 400 - y0),
                (600 - x1, 400 - y1),
                (600 - x0, 400 - y1),
            ),
        )

    page = OcrResult(
        600,
        400,
        300.0,
        (turned("bottom", 10, 300, 200, 330), turned("top", 10, 20, 200, 50)),
        rotation=180,
    )
    assert render_sidecar(Sidecar.txt, [page], title="doc") == "top\nbottom\n"
    hocr = ET.fromstring(render_sidecar(Sidecar.hocr, [page], title="doc"))
    lines = hocr.findall(".//{http://www.w3.org/1999/xhtml}span[@class='ocr_line']")
    assert [line.get("title") for line in lines] == [
        "bbox 400 350 590 380; textangle 180",
        "bbox 400 70 590 100; textangle 180",
    ]
    alto = ET.fromstring(render_sidecar(Sidecar.alto, [page], title="doc"))
    assert alto.find(f".//{ALTO}TextBlock").get("ROTATION") == "180"


def test_a_page_turned_a_quarter_reads_upright_and_says_how_it_is_turned():
    # a 400 x 600 px page whose text runs upwards (turned a quarter counterclockwise):
    # "top" is the line nearest the left edge, its top edge at x = 20
    def upwards(text, x0, x1):
        return TextLine(text, 0.9, ((x0, 580.0), (x0, 20.0), (x1, 20.0), (x1, 580.0)))

    page = OcrResult(
        400, 600, 300.0, (upwards("bottom", 300.0, 330.0), upwards("top", 20.0, 50.0)), rotation=90
    )
    assert render_sidecar(Sidecar.txt, [page], title="doc") == "top\nbottom\n"
    hocr = ET.fromstring(render_sidecar(Sidecar.hocr, [page], title="doc"))
    lines = hocr.findall(".//{http://www.w3.org/1999/xhtml}span[@class='ocr_line']")
    assert [line.get("title") for line in lines] == [
        "bbox 20 20 50 580; textangle 90",  # boxes in the image's own pixels
        "bbox 300 20 330 580; textangle 90",
    ]
    alto = ET.fromstring(render_sidecar(Sidecar.alto, [page], title="doc"))
    assert alto.find(f".//{ALTO}TextBlock").get("ROTATION") == "90"


def test_the_txt_sidecar_equals_the_pdfs_extracted_text(tmp_path):
    from PIL import Image

    for n, page in enumerate(PAGES):
        size = (page.width, page.height) if page else (300, 300)
        Image.new("RGB", size, "white").save(tmp_path / f"p{n}.png", dpi=(300, 300))
    items = [
        PdfPage(PageSource(tmp_path / f"p{n}.png", "image"), page) for n, page in enumerate(PAGES)
    ]
    pdf = tmp_path / "doc.pdf"
    assemble_pdf(items, pdf, title="doc")
    (txt,) = write_sidecars(tmp_path, PurePosixPath("doc.pdf"), [Sidecar.txt], PAGES, title="doc")
    with pymupdf.open(pdf) as doc:
        extracted = [page.get_text() for page in doc]
    assert txt.name == "doc.txt"
    assert (tmp_path / txt).read_text("utf-8").split("\f") == extracted


@pytest.mark.parametrize("kind", list(Sidecar))
def test_each_sidecar_is_written_beside_the_pdf(tmp_path, kind):
    (rel,) = write_sidecars(tmp_path, PurePosixPath("a b.pdf"), [kind], PAGES, title="a b")
    path = tmp_path / rel
    assert path == tmp_path / f"a b.{kind.value}"
    assert path.read_text("utf-8") == render_sidecar(kind, PAGES, title="a b")
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
