"""The searchable PDF: round trips on the corpus, kept image bytes, order, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pymupdf
import pytest
from PIL import Image, ImageOps

from daemon.config import TextPolicy
from daemon.engine import OcrResult, TextLine, load_page_image
from daemon.layout import reading_order
from daemon.pdf import (
    EncryptedPdfError,
    PageSource,
    PageSourceError,
    PdfPage,
    assemble_pdf,
    expand_pages,
    render_page,
    skipped_pages,
)


def test_a_pdf_page_is_rendered_for_ocr_uncompressed_stating_its_dpi(corpus, tmp_path):
    source = PageSource(corpus / "pdf/multipage.pdf", "pdf", 0)
    with pymupdf.open(source.path) as doc:
        inches = (doc[0].rect.width / 72, doc[0].rect.height / 72)
    assert render_page(source, tmp_path / "p.tif", dpi=300, max_pixels=50_000_000) == 300
    image = load_page_image(tmp_path / "p.tif")
    assert image.dpi == 300
    assert image.pixels.shape == (round(inches[1] * 300), round(inches[0] * 300), 3)
    with Image.open(tmp_path / "p.tif") as tiff:
        assert tiff.info["compression"] == "raw"
    capped = render_page(source, tmp_path / "c.tif", dpi=300, max_pixels=1_000_000)
    small = load_page_image(tmp_path / "c.tif")
    assert small.dpi == capped < 300
    assert small.pixels.shape[0] * small.pixels.shape[1] <= 1_000_000


PER_PAGE_OVERHEAD = 16 * 1024
"""Bytes a page may add to its source image (text layer, font share, objects)."""


KOREAN = OcrResult(
    1618,
    208,
    144.0,
    (
        TextLine(
            "베이징 차오양, 디지털 기술로 농업 새로운 발전 이끌어",
            0.98,
            ((118.0, 66.0), (1420.0, 66.0), (1420.0, 142.0), (118.0, 142.0)),
        ),
    ),
)
"""korean.jpg as a Korean recognition model reads it. The shipped PP-OCRv6 small model
has no Hangul in its dictionary; its detector finds this very box."""


@pytest.fixture
def ocr_of(corpus_ocr):
    """``(corpus name, page index) -> OcrResult``, the real engine's except for Korean."""
    return lambda name, index=0: KOREAN if name == "images/korean.jpg" else corpus_ocr(name, index)


def _build(corpus, ocr_of, name: str, dest: Path, **kwargs) -> tuple[Path, list[PdfPage]]:
    """Assemble a corpus document the way the daemon does: OCR where the default text
    policy asks for it, the page kept as it is elsewhere."""
    kept = skipped_pages(expand_pages(corpus / name)[0], TextPolicy.skip)
    pages = [
        PdfPage(src, None if src.index in kept else ocr_of(name, src.index))
        for src in expand_pages(corpus / name)
    ]
    assemble_pdf(pages, dest, title=dest.stem, **kwargs)
    return dest, pages


def _chars(page: pymupdf.Page) -> list[tuple[str, pymupdf.Rect, tuple[float, float]]]:
    """Every extracted character with its box and its line's direction."""
    out = []
    for block in page.get_text("rawdict")["blocks"]:
        for line in block.get("lines", []):
            for span in line["spans"]:
                for char in span["chars"]:
                    out.append((char["c"], pymupdf.Rect(char["bbox"]), line["dir"]))
    return out


def _to_page(page: pymupdf.Page, ocr: OcrResult) -> pymupdf.Matrix:
    """OCR pixels -> PyMuPDF's unrotated page space (where extraction reports boxes).

    The OCR saw the page as it was shown before a page found upside down was turned
    (``ocr.rotation``), so the derotation is that of the rotation it had then.
    """
    zoom = 72.0 / ocr.dpi
    shown = page.rotation
    page.set_rotation((shown - ocr.rotation) % 360)
    matrix = pymupdf.Matrix(zoom, zoom) * page.derotation_matrix
    page.set_rotation(shown)
    return matrix


def _check_round_trip(pdf: Path, pages: list[PdfPage]) -> int:
    """Assert every OCR line is extracted with its text, in place. Returns lines checked."""
    checked = 0
    with pymupdf.open(pdf) as doc:
        assert doc.page_count == len(pages)
        for page, item in zip(doc, pages, strict=True):
            if item.ocr is None:
                continue
            chars = _chars(page)
            matrix = _to_page(page, item.ocr)
            for line in item.ocr.lines:
                _check_line(chars, line, matrix)
                checked += 1
    return checked


def _check_line(chars, line: TextLine, matrix: pymupdf.Matrix) -> None:
    corners = [pymupdf.Point(x, y) * matrix for x, y in line.polygon]
    box = pymupdf.Rect(
        min(p.x for p in corners),
        min(p.y for p in corners),
        max(p.x for p in corners),
        max(p.y for p in corners),
    )
    near = [
        c
        for c in chars
        if (c[1].tl + c[1].br) / 2 in box + pymupdf.Rect(-2, -2, 2, 2) and c[0] != " "
    ]
    want = line.text.replace(" ", "")
    text = "".join(c[0] for c in near)
    starts = [i for i in range(len(text)) if text.startswith(want, i)]
    assert starts, f"{line.text!r} not extracted near {box}"

    def union(start: int) -> pymupdf.Rect:
        rect = pymupdf.Rect(near[start][1])
        for c in near[start : start + len(want)]:
            rect |= c[1]
        return rect

    def deviation(start: int) -> float:
        return max(abs(a - b) for a, b in zip(union(start), box, strict=True))

    best = min(starts, key=deviation)
    matched = near[best : best + len(want)]
    top = corners[1] - corners[0]
    angle = math.degrees(math.atan2(top.y, top.x))
    if min(abs(angle), abs(abs(angle) - 90), abs(abs(angle) - 180)) < 1.0:
        assert deviation(best) <= 2.0, f"{line.text!r}: {union(best)} vs polygon {box}"
    direction = matched[0][2]
    extracted = math.degrees(math.atan2(direction[1], direction[0]))
    assert abs((extracted - angle + 180) % 360 - 180) < 3.0, f"{line.text!r} direction"


CORPUS_DOCUMENTS = [
    "images/ch_en_num.jpg",
    "images/korean.jpg",
    "images/img_exif_orientation.jpg",
    "pdf/cardinal.pdf",
    "pdf/multipage.pdf",
    "pdf/ccitt.pdf",
    "pdf/jbig2.pdf",
]


@pytest.mark.parametrize("name", CORPUS_DOCUMENTS)
def test_every_ocr_line_is_extracted_in_place(corpus, ocr_of, tmp_path, name):
    pdf, pages = _build(corpus, ocr_of, name, tmp_path / "out.pdf")
    assert _check_round_trip(pdf, pages) == sum(len(p.ocr.lines) for p in pages if p.ocr) > 0


@pytest.mark.parametrize("name", CORPUS_DOCUMENTS)
def test_output_adds_at_most_16_kb_per_page_to_the_source(corpus, ocr_of, tmp_path, name):
    pdf, pages = _build(corpus, ocr_of, name, tmp_path / "out.pdf")
    assert pdf.stat().st_size <= (corpus / name).stat().st_size + PER_PAGE_OVERHEAD * len(pages)


def test_cjk_text_extracts_as_the_same_characters(corpus, ocr_of, tmp_path):
    for name in ("images/ch_en_num.jpg", "images/korean.jpg"):
        pdf, pages = _build(corpus, ocr_of, name, tmp_path / "out.pdf")
        with pymupdf.open(pdf) as doc:
            text = "".join(doc[0].get_text().split())
        assert pages[0].ocr.lines
        for line in pages[0].ocr.lines:
            assert "".join(line.text.split()) in text
        assert "正品促销" in text or "디지털기술로" in text


def test_the_text_layer_is_invisible_in_one_stream_with_an_embedded_cjk_font(
    corpus, ocr_of, tmp_path
):
    pdf, _ = _build(corpus, ocr_of, "images/ch_en_num.jpg", tmp_path / "out.pdf")
    with pymupdf.open(pdf) as doc:
        page = doc[0]
        streams = [doc.xref_stream(x) for x in page.get_contents()]
        assert sum(b"BT" in s for s in streams) == 1
        assert b"3 Tr" in b"".join(streams)
        assert {span["type"] for span in page.get_texttrace()} == {3}
        (font,) = page.get_fonts()
        xref, ext, kind, basefont = font[:4]
        assert (ext, kind) == ("ttf", "Type0") and "+" in basefont  # embedded subset
        assert doc.xref_get_key(xref, "ToUnicode")[0] == "xref"


def test_a_rotated_pdf_page_gets_its_text_layer_along_the_rotation(corpus, ocr_of, tmp_path):
    with pymupdf.open(corpus / "pdf/cardinal.pdf") as src:
        src.select([0])
        src[0].set_rotation(90)
        src.save(tmp_path / "rotated.pdf")
    upright = ocr_of("pdf/cardinal.pdf", 0)
    # The same page shown turned 90 degrees clockwise: pixel (x, y) -> (H - y, x).
    turned = tuple(
        TextLine(
            line.text, line.confidence, tuple((upright.height - y, x) for x, y in line.polygon)
        )
        for line in upright.lines
    )
    ocr = OcrResult(upright.height, upright.width, upright.dpi, turned)
    pages = [PdfPage(PageSource(tmp_path / "rotated.pdf", "pdf", 0), ocr)]
    assemble_pdf(pages, tmp_path / "out.pdf", title="rotated")
    assert _check_round_trip(tmp_path / "out.pdf", pages) == len(turned)
    with pymupdf.open(tmp_path / "out.pdf") as doc:
        assert doc[0].rotation == 90
        assert doc[0].get_text().startswith("The LinnSequencer")


def test_pages_found_turned_are_shown_upright_with_their_text(corpus, ocr_of, tmp_path):
    pdf, pages = _build(corpus, ocr_of, "pdf/cardinal.pdf", tmp_path / "out.pdf")
    # content turned 0/90/180/270 degrees clockwise; each page is turned back
    assert [item.ocr.rotation for item in pages] == [0, 270, 180, 90]
    assert _check_round_trip(pdf, pages) == sum(len(item.ocr.lines) for item in pages)
    with pymupdf.open(pdf) as doc:
        assert [page.rotation for page in doc] == [0, 270, 180, 90]
        assert all(page.rect.width < page.rect.height for page in doc)  # portrait, as shown
        texts = [page.get_text() for page in doc]
    for text in texts:  # every page reads like the upright one, first line first
        assert text.startswith("The LinnSequencer\n32 Track MIDI Sequence Recorder\n")


def test_a_jpeg_page_keeps_the_source_jpeg_bytes(corpus, ocr_of, tmp_path):
    for name in ("images/ch_en_num.jpg", "images/img_exif_orientation.jpg"):
        pdf, _ = _build(corpus, ocr_of, name, tmp_path / "out.pdf")
        with pymupdf.open(pdf) as doc:
            (image,) = doc[0].get_images()
            assert doc.xref_stream_raw(image[0]) == (corpus / name).read_bytes()


def test_a_png_page_keeps_its_compressed_data_and_pixels(corpus, tmp_path):
    import numpy as np

    for name in ("typewriter.png", "baiona.png", "crom.png"):  # palette 1-bit, RGB, grey
        path = corpus / "images" / name
        assemble_pdf([PdfPage(PageSource(path, "image"), None)], tmp_path / "out.pdf", title="p")
        data = path.read_bytes()
        idat, pos = b"", 8
        while pos < len(data):
            length = int.from_bytes(data[pos : pos + 4], "big")
            if data[pos + 4 : pos + 8] == b"IDAT":
                idat += data[pos + 8 : pos + 8 + length]
            pos += 12 + length
        with pymupdf.open(tmp_path / "out.pdf") as doc, Image.open(path) as im:
            (image,) = doc[0].get_images()
            assert doc.xref_stream_raw(image[0]) == idat
            pix = pymupdf.Pixmap(doc, image[0])
            shown = np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.width, pix.n)
            expected = np.asarray(im.convert("RGB" if pix.n == 3 else "L"))
            assert np.array_equal(shown.reshape(expected.shape), expected)


def test_the_exif_orientation_is_applied_so_the_page_is_upright(corpus, ocr_of, tmp_path):
    name = "images/img_exif_orientation.jpg"
    pdf, pages = _build(corpus, ocr_of, name, tmp_path / "out.pdf")
    with Image.open(corpus / name) as im:
        assert im.getexif().get(274) not in (None, 1)
        upright = ImageOps.exif_transpose(im).convert("L").resize((64, 64))
        stored = im.convert("L").resize((64, 64))
    with pymupdf.open(pdf) as doc:
        page = doc[0]
        assert (page.rect.width, page.rect.height) == pytest.approx(
            (
                pages[0].ocr.width * 72 / pages[0].ocr.dpi,
                pages[0].ocr.height * 72 / pages[0].ocr.dpi,
            )
        )
        pix = page.get_pixmap(dpi=72, colorspace=pymupdf.csGRAY)
    shown = Image.frombytes("L", (pix.width, pix.height), pix.samples).resize((64, 64))

    def distance(a, b):
        return sum(abs(x - y) for x, y in zip(a.tobytes(), b.tobytes(), strict=True))

    assert distance(shown, upright) < distance(shown, stored) / 3


@pytest.mark.parametrize(
    ("name", "codec"), [("pdf/ccitt.pdf", "CCITTFaxDecode"), ("pdf/jbig2.pdf", "JBIG2Decode")]
)
def test_a_bilevel_scan_keeps_its_original_image_stream(corpus, ocr_of, tmp_path, name, codec):
    pdf, _ = _build(corpus, ocr_of, name, tmp_path / "out.pdf")
    with pymupdf.open(corpus / name) as src, pymupdf.open(pdf) as out:
        (before,) = src[0].get_images()
        (after,) = out[0].get_images()
        assert out.xref_get_key(after[0], "Filter")[1].endswith(codec)
        assert out.xref_stream_raw(after[0]) == src.xref_stream_raw(before[0])


def test_multipage_document_keeps_its_six_pages_in_order(corpus, ocr_of, tmp_path):
    pdf, pages = _build(corpus, ocr_of, "pdf/multipage.pdf", tmp_path / "out.pdf", chunk_pages=4)
    with pymupdf.open(pdf) as doc, pymupdf.open(corpus / "pdf/multipage.pdf") as src_doc:
        assert doc.page_count == 6
        for page, item, source in zip(doc, pages, src_doc, strict=True):
            if item.ocr is None:  # a page with its own text, kept as it is
                assert page.get_text() == source.get_text()
                continue
            first = item.ocr.lines[reading_order(item.ocr.lines)[0]].text
            assert page.get_text().startswith(first)


def _fonts(doc: pymupdf.Document) -> set[int]:
    return {font[0] for page in doc for font in page.get_fonts()}


def test_objects_a_long_pdf_shares_across_pages_are_written_once(corpus, tmp_path):
    # 60 pages of a born-digital PDF whose pages all use the same fonts, built in three
    # chunks: each chunk copies the fonts, and the final save merges the copies
    with pymupdf.open(corpus / "pdf/tagged.pdf") as tagged, pymupdf.open() as long:
        for n in range(30):
            long.insert_pdf(tagged, final=int(n == 29))  # one graft map: fonts shared
        long.save(tmp_path / "long.pdf", garbage=4)
        fonts = len(_fonts(long))
    sources = expand_pages(tmp_path / "long.pdf")
    assemble_pdf([PdfPage(s, None) for s in sources], tmp_path / "out.pdf", title="long")
    with pymupdf.open(tmp_path / "long.pdf") as src, pymupdf.open(tmp_path / "out.pdf") as out:
        assert len(_fonts(out)) == fonts
        assert [page.get_text() for page in out] == [page.get_text() for page in src]
    assert (tmp_path / "out.pdf").stat().st_size < (tmp_path / "long.pdf").stat().st_size * 1.1


def test_bookmarks_of_source_pdfs_are_kept_and_point_at_their_pages(corpus, tmp_path):
    tagged, multipage = corpus / "pdf/tagged.pdf", corpus / "pdf/multipage.pdf"
    with pymupdf.open(tagged) as a, pymupdf.open(multipage) as b:
        before = a.get_toc(simple=False), b.get_toc(simple=False)
    assert [len(toc) for toc in before] == [2, 4]
    # one document: an image page, then both PDFs (their bookmarks move down the pages)
    image = PageSource(corpus / "images/ch_en_num.jpg", "image")
    sources = [image, *expand_pages(tagged), *expand_pages(multipage)]
    assemble_pdf([PdfPage(s, None) for s in sources], tmp_path / "out.pdf", title="both")
    with pymupdf.open(tmp_path / "out.pdf") as out:
        after = out.get_toc(simple=False)
    shifts = [1] * len(before[0]) + [3] * len(before[1])
    expected = [entry for toc in before for entry in toc]
    assert [(e[0], e[1], e[2]) for e in after] == [
        (e[0], e[1], e[2] + shift) for e, shift in zip(expected, shifts, strict=True)
    ]
    for got, want in zip(after, expected, strict=True):  # the same spot on the page
        assert abs(got[3]["to"].y - want[3]["to"].y) < 0.5, got


def test_a_bookmark_whose_page_is_left_out_stays_without_a_target(corpus, tmp_path):
    tagged = corpus / "pdf/tagged.pdf"
    first = expand_pages(tagged)[:1]  # page 2 failed and is left out
    assemble_pdf([PdfPage(s, None) for s in first], tmp_path / "out.pdf", title="one")
    with pymupdf.open(tmp_path / "out.pdf") as out:
        assert out.get_toc() == [[1, "Heading", 1], [1, "Page 2 Heading", -1]]


def test_a_damaged_outline_does_not_stop_the_document(tmp_path):
    with pymupdf.open() as doc:
        for _ in range(2):
            doc.new_page()
        doc.set_toc([[1, "a", 1], [1, "b", 2]])
        outlines = int(doc.xref_get_key(doc.pdf_catalog(), "Outlines")[1].split()[0])
        first = int(doc.xref_get_key(outlines, "First")[1].split()[0])
        doc.xref_set_key(first, "Next", f"{first} 0 R")  # a loop
        doc.save(tmp_path / "loop.pdf")
    sources = expand_pages(tmp_path / "loop.pdf")
    assemble_pdf([PdfPage(s, None) for s in sources], tmp_path / "out.pdf", title="loop")
    with pymupdf.open(tmp_path / "out.pdf") as out:
        assert out.page_count == 2
        assert out.get_toc() == []  # MuPDF drops the looping outline


def test_a_pdf_form_keeps_its_fields(tmp_path):
    with pymupdf.open() as form:
        for n in range(2):
            page = form.new_page()
            field = pymupdf.Widget()
            field.field_type = pymupdf.PDF_WIDGET_TYPE_TEXT
            field.field_name = f"name{n}"
            field.field_value = f"value {n}"
            field.rect = pymupdf.Rect(72, 72, 300, 100)
            page.add_widget(field)
        form.save(tmp_path / "form.pdf")
    sources = expand_pages(tmp_path / "form.pdf")
    assemble_pdf([PdfPage(s, None) for s in sources], tmp_path / "out.pdf", title="form")
    with pymupdf.open(tmp_path / "out.pdf") as out:
        assert out.is_form_pdf == 2
        values = [[w.field_value for w in page.widgets()] for page in out]
        assert values == [["value 0"], ["value 1"]]


def test_a_page_with_text_is_kept_and_not_ocrd_under_the_default_policy(corpus, tmp_path):
    sources = expand_pages(corpus / "pdf/tagged.pdf")
    assert skipped_pages(expand_pages(corpus / "pdf/tagged.pdf")[0], TextPolicy.skip) == {0, 1}
    assert skipped_pages(expand_pages(corpus / "pdf/tagged.pdf")[0], TextPolicy.force) == set()
    assemble_pdf([PdfPage(s, None) for s in sources], tmp_path / "out.pdf", title="tagged")
    with pymupdf.open(corpus / "pdf/tagged.pdf") as src, pymupdf.open(tmp_path / "out.pdf") as out:
        assert [p.get_text() for p in out] == [p.get_text() for p in src]


@pytest.mark.parametrize("policy", [TextPolicy.redo, TextPolicy.force])
def test_an_earlier_ocr_layer_is_replaced_instead_of_adding_a_second(
    corpus, ocr_of, tmp_path, policy
):
    first, pages = _build(corpus, ocr_of, "pdf/ccitt.pdf", tmp_path / "first.pdf")
    (source,) = expand_pages(first)
    assert skipped_pages(expand_pages(first)[0], TextPolicy.skip) == {0}  # our own invisible layer
    assert skipped_pages(expand_pages(first)[0], policy) == set()
    assemble_pdf(
        [PdfPage(source, pages[0].ocr)], tmp_path / "again.pdf", title="again", policy=policy
    )
    with pymupdf.open(first) as a, pymupdf.open(tmp_path / "again.pdf") as b:
        assert b[0].get_text() == a[0].get_text()
        assert len(b[0].get_images()) == 1


def test_redo_of_a_many_page_pdf_we_wrote_gives_every_page_its_text_again(corpus, ocr_of, tmp_path):
    first, pages = _build(corpus, ocr_of, "pdf/multipage.pdf", tmp_path / "first.pdf")
    again = [
        PdfPage(source, item.ocr) for source, item in zip(expand_pages(first), pages, strict=True)
    ]
    assemble_pdf(again, tmp_path / "again.pdf", title="again", policy=TextPolicy.redo)
    assert _check_round_trip(tmp_path / "again.pdf", again) > 0
    with pymupdf.open(first) as a, pymupdf.open(tmp_path / "again.pdf") as b:
        assert [page.get_text() for page in b] == [page.get_text() for page in a]


def _pdf_with_inherited_resources(path: Path) -> None:
    """Two pages drawing one image through ``/Resources`` held, as an indirect object,
    by the page tree rather than by the pages (PDF 1.7, 7.7.3.4)."""
    doc = pymupdf.open()
    page = doc.new_page(width=200, height=100)
    pixmap = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 20, 10), False)
    pixmap.clear_with(0)
    page.insert_image(page.rect, pixmap=pixmap)
    first = page.xref
    resources = doc.xref_get_key(first, "Resources")[1]
    contents = doc.xref_get_key(first, "Contents")[1]
    tree = int(doc.xref_get_key(doc.pdf_catalog(), "Pages")[1].split()[0])
    doc.xref_set_key(tree, "Resources", resources)
    doc.xref_set_key(first, "Resources", "null")
    second = doc.get_new_xref()
    doc.update_object(
        second, f"<</Type/Page/Parent {tree} 0 R/MediaBox[0 0 200 100]/Contents {contents}>>"
    )
    doc.xref_set_key(tree, "Kids", f"[{first} 0 R {second} 0 R]")
    doc.xref_set_key(tree, "Count", "2")
    doc.save(path)


def test_pages_with_inherited_resources_keep_their_image_and_get_their_text(tmp_path):
    _pdf_with_inherited_resources(tmp_path / "inherit.pdf")
    line = TextLine("hello", 0.9, ((10.0, 10.0), (150.0, 10.0), (150.0, 40.0), (10.0, 40.0)))
    ocr = OcrResult(200, 100, 72.0, (line,))
    pages = [PdfPage(PageSource(tmp_path / "inherit.pdf", "pdf", i), ocr) for i in range(2)]
    assemble_pdf(pages, tmp_path / "out.pdf", title="inherit")
    with pymupdf.open(tmp_path / "out.pdf") as doc:
        assert [page.get_text().strip() for page in doc] == ["hello", "hello"]
        for page in doc:  # the black image still covers the whole page
            samples = page.get_pixmap().samples
            assert max(samples) < 128, page.number


def test_metadata_names_title_producer_and_date(corpus, ocr_of, tmp_path):
    pdf, _ = _build(corpus, ocr_of, "images/korean.jpg", tmp_path / "Letters 1921.pdf")
    with pymupdf.open(pdf) as doc:
        meta = doc.metadata
    assert meta["title"] == "Letters 1921"
    assert meta["producer"].startswith("scanhopper ")
    assert meta["creationDate"].startswith("D:20")


def _page_order(text: str, lines: list[str]) -> list[int]:
    return [text.find(line) for line in lines]


@pytest.mark.parametrize(
    ("name", "index", "band"),
    [
        ("pdf/multipage.pdf", 4, (0.0, 1.0)),
        ("pdf/multipage.pdf", 5, (0.0, 1.0)),
        ("pdf/ccitt.pdf", 0, (0.39, 0.65)),
    ],
)
def test_columns_are_read_left_column_first(corpus, ocr_of, tmp_path, name, index, band):
    pdf, pages = _build(corpus, ocr_of, name, tmp_path / "out.pdf")
    ocr = pages[index].ocr
    middle = ocr.width / 2

    def side(line: TextLine) -> str | None:
        xs = [p[0] for p in line.polygon]
        ys = [p[1] for p in line.polygon]
        if not band[0] * ocr.height <= (min(ys) + max(ys)) / 2 <= band[1] * ocr.height:
            return None
        return "left" if max(xs) < middle else "right" if min(xs) > middle else None

    with pymupdf.open(pdf) as doc:
        text = doc[index].get_text()
    left = [line.text for line in ocr.lines if side(line) == "left" and len(line.text) > 8]
    right = [line.text for line in ocr.lines if side(line) == "right" and len(line.text) > 8]
    assert len(left) > 5 and len(right) > 5
    left_at, right_at = _page_order(text, left), _page_order(text, right)
    assert -1 not in left_at + right_at
    assert max(left_at) < min(right_at)
    assert left_at == sorted(left_at) and right_at == sorted(right_at)


def test_a_corrupt_image_names_file_and_page_and_leaves_no_output(tmp_path):
    bad = tmp_path / "scan.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 50)
    good = Image.new("RGB", (100, 100), "white")
    good.save(tmp_path / "good.png")
    pages = [
        PdfPage(PageSource(tmp_path / "good.png", "image"), None),
        PdfPage(PageSource(bad, "image"), None),
    ]
    with pytest.raises(PageSourceError, match=r"scan\.jpg page 1: not a readable image"):
        assemble_pdf(pages, tmp_path / "out.pdf", title="x", chunk_pages=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.png", "scan.jpg"]


def test_an_encrypted_pdf_is_refused_by_name(tmp_path):
    doc = pymupdf.open()
    doc.new_page()
    doc.save(
        tmp_path / "secret.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="u", owner_pw="o"
    )
    with pytest.raises(EncryptedPdfError, match=r"secret\.pdf: the PDF is encrypted"):
        expand_pages(tmp_path / "secret.pdf")


def test_a_broken_pdf_is_refused_by_name(corpus):
    with pytest.raises(PageSourceError, match=r"invalid\.pdf: not a readable PDF"):
        expand_pages(corpus / "bad/invalid.pdf")


def test_a_pdf_page_that_vanished_names_the_page_and_leaves_no_output(corpus, tmp_path):
    pages = [PdfPage(PageSource(corpus / "pdf/ccitt.pdf", "pdf", 3), None)]
    with pytest.raises(PageSourceError, match=r"ccitt\.pdf page 4: cannot load page"):
        assemble_pdf(pages, tmp_path / "out.pdf", title="x")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".docx", ".txt", ""])
def test_unsupported_files_are_refused_by_type(tmp_path, suffix):
    path = tmp_path / f"notes{suffix}"
    path.write_text("hello")
    with pytest.raises(PageSourceError, match="unsupported file type"):
        expand_pages(path)


def test_a_multipage_tiff_is_one_page_per_frame(tmp_path):
    frames = [Image.new("L", (50, 60), shade) for shade in (0, 128, 255)]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:], dpi=(150, 150))
    sources = expand_pages(tmp_path / "stack.tif")
    assert [s.index for s in sources] == [0, 1, 2]
    assemble_pdf([PdfPage(s, None) for s in sources], tmp_path / "out.pdf", title="t")
    with pymupdf.open(tmp_path / "out.pdf") as doc:
        assert doc.page_count == 3
        assert doc[1].rect.width == pytest.approx(50 * 72 / 150)
