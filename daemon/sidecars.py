"""Sidecar files beside a published PDF: plain text, JSON, hOCR and ALTO XML."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from xml.sax.saxutils import escape, quoteattr

from . import __version__
from .config import Sidecar
from .engine import OcrResult, TextLine
from .files import fit_name, write_atomically
from .layout import lines_in_reading_order

__all__ = ["render_sidecar", "write_sidecars"]


Pages = Sequence[OcrResult | None]
"""A document's OCR results in page order; ``None`` for a page without a text layer."""


def _bbox(line: TextLine) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = line.bbox
    return round(x0), round(y0), round(x1), round(y1)


def _txt(pages: Pages, title: str) -> str:
    return "\f".join(
        "".join(f"{line.text}\n" for line in lines_in_reading_order(page)) if page else ""
        for page in pages
    )


def _json(pages: Pages, title: str) -> str:
    body = [
        None
        if page is None
        else {**page.to_dict(), "lines": [line.to_dict() for line in lines_in_reading_order(page)]}
        for page in pages
    ]
    return json.dumps({"title": title, "pages": body}, ensure_ascii=False, indent=1)


def _hocr(pages: Pages, title: str) -> str:
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="und" lang="und">',
        f"<head><title>{escape(title)}</title>",
        '<meta http-equiv="Content-Type" content="text/html; charset=utf-8"/>',
        f'<meta name="ocr-system" content="scanhopper {__version__}"/>',
        '<meta name="ocr-capabilities" content="ocr_page ocr_line ocrx_word"/>',
        "</head><body>",
    ]
    for n, page in enumerate(pages, 1):
        width, height = (page.width, page.height) if page else (0, 0)
        out.append(
            f'<div class="ocr_page" id="page_{n}" '
            f'title="bbox 0 0 {width} {height}; ppageno {n - 1}">'
        )
        # hOCR 1.2 textangle: degrees counterclockwise the text is turned against the page,
        # which are the degrees clockwise that turn the page upright (OcrResult.rotation)
        angle = f"; textangle {page.rotation}" if page and page.rotation else ""
        for k, line in enumerate(lines_in_reading_order(page) if page else [], 1):
            x0, y0, x1, y1 = _bbox(line)
            conf = round(line.confidence * 100)
            out.append(
                f'<span class="ocr_line" id="line_{n}_{k}" title="bbox {x0} {y0} {x1} {y1}{angle}">'
                f'<span class="ocrx_word" id="word_{n}_{k}" '
                f'title="bbox {x0} {y0} {x1} {y1}; x_wconf {conf}">'
                f"{escape(line.text)}</span></span>"
            )
        out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _alto(pages: Pages, title: str) -> str:
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="http://www.loc.gov/standards/alto/ns-v4# '
        'http://www.loc.gov/standards/alto/v4/alto-4-4.xsd">',
        "<Description><MeasurementUnit>pixel</MeasurementUnit>",
        f"<sourceImageInformation><fileName>{escape(title)}</fileName></sourceImageInformation>",
        '<OCRProcessing ID="ocr_0"><ocrProcessingStep><processingSoftware>'
        f"<softwareName>scanhopper</softwareName><softwareVersion>{__version__}"
        "</softwareVersion></processingSoftware></ocrProcessingStep></OCRProcessing>",
        "</Description><Layout>",
    ]
    for n, page in enumerate(pages, 1):
        width, height = (page.width, page.height) if page else (0, 0)
        out.append(
            f'<Page ID="page_{n}" PHYSICAL_IMG_NR="{n}" WIDTH="{width}" HEIGHT="{height}">'
            f'<PrintSpace HPOS="0" VPOS="0" WIDTH="{width}" HEIGHT="{height}">'
        )
        lines = lines_in_reading_order(page) if page else []
        if lines:
            # ALTO 4 ROTATION: degrees counterclockwise, as hOCR's textangle
            rotation = f' ROTATION="{page.rotation}"' if page and page.rotation else ""
            out.append(f'<TextBlock ID="block_{n}"{rotation}>')
            for k, line in enumerate(lines, 1):
                x0, y0, x1, y1 = _bbox(line)
                geometry = f'HPOS="{x0}" VPOS="{y0}" WIDTH="{x1 - x0}" HEIGHT="{y1 - y0}"'
                out.append(
                    f'<TextLine ID="line_{n}_{k}" {geometry}>'
                    f'<String ID="string_{n}_{k}" {geometry} '
                    f'CONTENT={quoteattr(line.text)} WC="{line.confidence:.4f}"/></TextLine>'
                )
            out.append("</TextBlock>")
        out.append("</PrintSpace></Page>")
    out.append("</Layout></alto>")
    return "\n".join(out) + "\n"


_RENDERERS = {Sidecar.txt: _txt, Sidecar.json: _json, Sidecar.hocr: _hocr, Sidecar.alto: _alto}


def render_sidecar(kind: Sidecar, pages: Pages, *, title: str) -> str:
    """Render one sidecar for a document's pages.

    Args:
        kind: The format.
        pages: OCR results in page order (``None`` for pages without OCR).
        title: The document's name.

    Returns:
        The file's text (UTF-8 when written).
    """
    return _RENDERERS[kind](pages, title)


def write_sidecars(
    root: Path, pdf: PurePosixPath, kinds: Sequence[Sidecar], pages: Pages, *, title: str
) -> list[PurePosixPath]:
    """Write each sidecar beside ``pdf`` (``doc.pdf`` -> ``doc.txt``, ``doc.alto.xml``...),
    each atomically and through no link (:func:`daemon.files.write_atomically`).

    Args:
        root: The outbox.
        pdf: The PDF's path relative to ``root``.

    Returns:
        The paths written, relative to ``root``.

    Raises:
        OSError: a file could not be written (no partial file is left).
    """
    written = []
    for kind in kinds:
        dest = pdf.with_name(fit_name(f"{pdf.stem}.{kind.value}"))
        text = render_sidecar(kind, pages, title=title)
        write_atomically(root, dest, lambda tmp, text=text: tmp.write_text(text, "utf-8"))
        written.append(dest)
    return written
