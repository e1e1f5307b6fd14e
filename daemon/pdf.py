"""Searchable PDF: page sources in, one PDF out (the scan plus an invisible text layer).

The only module that imports PyMuPDF. Coordinates: OCR polygons are in source-image
pixels (origin top-left); PDF geometry is in points (1/72 inch), in PyMuPDF's page
space (origin top-left of the unrotated page, y downwards).
"""

from __future__ import annotations

import errno
import functools
import io
import math
import re
import shutil
import struct
import uuid
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Literal

import pymupdf
from PIL import Image, ImageOps, UnidentifiedImageError

from . import __version__
from .config import TextPolicy
from .engine import OcrResult, TextLine
from .engine import image_dpi as file_dpi
from .files import SourceChangedError, UnsafePathError, open_source, temp_path_for
from .layout import lines_in_reading_order
from .memory import trim_heap

__all__ = [
    "EncryptedPdfError",
    "PageSource",
    "PageSourceError",
    "PdfPage",
    "assemble_pdf",
    "expand_pages",
    "prepare_page",
    "render_page",
    "skipped_pages",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})
"""File name endings taken as page images (case-insensitive)."""

_FONT_NAME = "ShOcr"
_FONT = pymupdf.Font("cjk")
"""Droid Sans Fallback: Latin, CJK, kana and Hangul; embedded with a ToUnicode map."""

# PIL's EXIF orientation (TIFF tag 274) -> counter-clockwise rotation that PyMuPDF's
# insert_image applies to show the stored pixels upright. Mirrored orientations (2, 4,
# 5, 7) have no rotation equivalent and are re-encoded upright instead.
_EXIF_ROTATION = {1: 0, 3: 180, 6: 270, 8: 90}


_PROC_FD = re.compile(r"/proc/self/fd/\d+")
_NOT_THE_CONTENT = (SourceChangedError, UnsafePathError, FileNotFoundError)
"""Errors opening a source that say nothing of its content (it changed, moved or is a
link): never reported as an unreadable page."""


class PageSourceError(Exception):
    """A page cannot be read: the message names the file and the page (1-based)."""

    def __init__(self, path: Path, page: int | None, reason: str) -> None:
        where = f"{path}" if page is None else f"{path} page {page + 1}"
        reason = _PROC_FD.sub(path.name, reason)  # libraries name the file they were given
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.page = page
        self.reason = reason


class EncryptedPdfError(PageSourceError):
    """The PDF needs a password."""


@dataclass(frozen=True)
class PageSource:
    """Where one page comes from. Its file is only ever read through :meth:`open`."""

    path: Path
    """The image or PDF file (shown in messages)."""
    kind: Literal["image", "pdf"]
    """``image`` (one frame of an image file) or ``pdf`` (one page of a PDF)."""
    index: int = 0
    """Frame or page index in the file, 0-based."""
    root: Path | None = None
    """The folder ``path`` is opened under without following links (an inbox root);
    ``None``: its own folder."""
    content_hash: str | None = None
    """SHA-256 the file must still have when opened (recorded at intake)."""

    @contextmanager
    def open(self) -> Iterator[Path]:
        """The file, open: yields ``/proc/self/fd/N`` for libraries to read.

        Raises:
            daemon.files.SourceChangedError: it no longer hashes to ``content_hash``,
                or changed while open.
            daemon.files.UnsafePathError: a link on its path under ``root``.
            OSError: it cannot be opened.
        """
        root = self.root or self.path.parent
        with open_source(root, self.path.relative_to(root).as_posix(), self.content_hash) as f:
            yield f.path


@dataclass(frozen=True)
class PdfPage:
    """One page to write: its source, and its OCR (``None``: no text layer)."""

    source: PageSource
    ocr: OcrResult | None


def _open_pdf(path: Path, shown: Path) -> pymupdf.Document:
    """Open a PDF for reading (``shown`` names it in errors).

    Raises:
        EncryptedPdfError: it needs a password.
        PageSourceError: it is not a readable PDF or has no pages.
    """
    try:
        doc = pymupdf.open(path, filetype="pdf")
    except (pymupdf.FileDataError, RuntimeError, ValueError) as exc:
        raise PageSourceError(shown, None, f"not a readable PDF ({exc})") from exc
    if doc.needs_pass:
        doc.close()
        raise EncryptedPdfError(shown, None, "the PDF is encrypted and needs a password")
    if doc.page_count == 0:
        doc.close()
        raise PageSourceError(shown, None, "the PDF has no pages")
    return doc


@contextmanager
def _opened_pdf(source: PageSource) -> Iterator[pymupdf.Document]:
    """A source PDF, open; MuPDF's cache is emptied when it is closed (see
    :func:`release_cache`)."""
    try:
        with source.open() as path, _open_pdf(path, source.path) as doc:
            yield doc
    finally:
        release_cache()


def release_cache() -> None:
    """Empty MuPDF's resource store, process-wide, and give freed memory back.

    MuPDF keeps every image and font it loaded in a store of up to 256 MB (its
    default, which PyMuPDF cannot lower) until the store is full: listing the text of
    300 scanned pages of a 267 MB PDF took the daemon from 150 to 400 MB and kept it
    there. Emptying it after each use bounds memory by the pages in use, not the
    file; objects in use are reference-counted and stay. glibc's ``malloc_trim``
    then returns the freed pages of every thread's arena to the system (renders in
    anyio's worker threads otherwise left each arena at its high-water mark).
    """
    pymupdf.TOOLS.store_shrink(100)
    trim_heap()


def expand_pages(
    path: Path, *, root: Path | None = None, content_hash: str | None = None
) -> list[PageSource]:
    """List the pages of a file: one per PDF page or image frame, in order.

    Args:
        path: The file; opened under ``root`` (default: its folder) without links.
        content_hash: SHA-256 the file must have; the sources returned carry it.

    Raises:
        PageSourceError: unsupported type, unreadable or empty file (encrypted PDFs
            raise :class:`EncryptedPdfError`).
        daemon.files.SourceChangedError, OSError: as :meth:`PageSource.open`.
    """
    suffix = path.suffix.lower()
    whole = PageSource(path, "pdf", 0, root, content_hash)
    if suffix == ".pdf":
        with _opened_pdf(whole) as doc:
            return [PageSource(path, "pdf", i, root, content_hash) for i in range(doc.page_count)]
    if suffix not in IMAGE_SUFFIXES:
        raise PageSourceError(path, None, f"unsupported file type {suffix or '(none)'!r}")
    try:
        with whole.open() as opened, Image.open(opened) as im:
            frames = getattr(im, "n_frames", 1)
            im.verify()
    except _NOT_THE_CONTENT:
        raise
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        OSError,
        SyntaxError,
    ) as exc:
        raise PageSourceError(path, None, f"not a readable image ({exc})") from exc
    return [PageSource(path, "image", i, root, content_hash) for i in range(frames)]


def _has_visible_text(page: pymupdf.Page) -> bool:
    return any(span["type"] != 3 for span in page.get_texttrace())


def skipped_pages(source: PageSource, policy: TextPolicy) -> frozenset[int]:
    """Pages of a file that are kept as they are, without OCR, under ``policy``.

    Under ``skip`` a PDF page with any text is kept; under ``redo`` only one with
    visible text (not render mode 3); under ``force`` none. Image files: none. A page
    that cannot be loaded is not skipped (rendering it reports what is wrong).

    Args:
        source: Any page of the file (as :func:`expand_pages` gives).

    Returns:
        0-based page indexes.

    Raises:
        PageSourceError: the PDF cannot be opened.
    """
    if source.kind != "pdf" or policy is TextPolicy.force:
        return frozenset()
    kept = set()
    with _opened_pdf(source) as doc:
        for index in range(doc.page_count):
            try:
                page = doc.load_page(index)
                has_text = (
                    bool(page.get_text("text").strip())
                    if policy is TextPolicy.skip
                    else _has_visible_text(page)
                )
            except (ValueError, RuntimeError):
                continue
            finally:
                release_cache()  # one page's images at a time
            if has_text:
                kept.add(index)
    return frozenset(kept)


def _load_page(doc: pymupdf.Document, source: PageSource) -> pymupdf.Page:
    try:
        return doc.load_page(source.index)
    except (ValueError, IndexError, RuntimeError) as exc:
        raise PageSourceError(source.path, source.index, f"cannot load page ({exc})") from exc


def render_page(source: PageSource, dest: Path, *, dpi: float, max_pixels: int) -> float:
    """Rasterise one PDF page for OCR, as a viewer shows it (rotation applied), into an
    uncompressed RGB TIFF that states its DPI.

    Uncompressed, since the file lives only until the page is read: writing and
    decoding a 2550 x 3300 px page took 0.02 + 0.02 s, against 0.27 + 0.13 s as PNG,
    CPU time the OCR workers beside the daemon lost (25 MB on disk a page, bounded by
    the queues). The resolution is lowered where ``dpi`` would exceed ``max_pixels``
    pixels, so a huge page costs bounded memory.

    Args:
        source: A ``pdf`` page.
        dest: The TIFF file to write.
        dpi: Wanted resolution in dots per inch.
        max_pixels: Most pixels (width x height) the image may have.

    Returns:
        The DPI actually used (also stored in the TIFF).

    Raises:
        PageSourceError: the page cannot be read or rendered.
        OSError: the file cannot be written.
    """
    with _opened_pdf(source) as doc:
        page = _load_page(doc, source)
        area_in2 = (page.rect.width / 72.0) * (page.rect.height / 72.0)
        used = max(int(min(dpi, math.sqrt(max_pixels / max(area_in2, 1e-6)))), 1)
        try:
            pix = page.get_pixmap(dpi=used, colorspace=pymupdf.csRGB, annots=False, alpha=False)
        except (RuntimeError, ValueError, MemoryError) as exc:
            raise PageSourceError(source.path, source.index, f"cannot render ({exc})") from exc
        size = (pix.width, pix.height)
        image = Image.frombuffer("RGB", size, pix.samples_mv, "raw", "RGB", pix.stride, 1)
        image.save(dest, format="TIFF", dpi=(used, used))
        del image, pix  # freed before the cache is released on closing the PDF
        return float(used)


def prepare_page(
    source: PageSource, work_dir: Path, *, dpi: float, max_pixels: int
) -> tuple[Path, int]:
    """Make the image file a worker OCRs for one page.

    Workers read only files in ``work_dir``, never a source: an image file is copied
    there (its bytes checked as they are copied, the worker then decodes the frame);
    a PDF page is rasterised there (see :func:`render_page`). Each page gets a folder
    of its own, so the file keeps its source's name.

    Returns:
        ``(image path, frame index)`` for :meth:`daemon.workers.WorkerPool.ocr`.

    Raises:
        PageSourceError: a PDF page cannot be rendered.
        daemon.files.SourceChangedError, OSError: as :meth:`PageSource.open`.
    """
    folder = work_dir / f"{source.path.name[:32]}-{source.index}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    if source.kind == "image":
        dest = folder / source.path.name
        with source.open() as opened:
            shutil.copyfile(opened, dest)
        return dest, source.index
    dest = folder / f"{source.path.stem}-p{source.index + 1:05d}.tif"
    render_page(source, dest, dpi=dpi, max_pixels=max_pixels)
    return dest, 0


@functools.cache
def _glyph(char: str) -> tuple[int, float]:
    """The font's glyph id for a character (0: none) and its advance width in em."""
    return _FONT.has_glyph(ord(char)), _FONT.glyph_advance(ord(char))


def _line_operators(line: TextLine, to_pdf: pymupdf.Matrix) -> str:
    """PDF operators that show one text line invisibly, fitted to its polygon.

    Font size from the line height (the font's ascender-to-descender box equals the
    polygon's height), horizontal scale to the polygon's width, direction from its top
    edge; the baseline starts one ascender below the top-left corner. The text matrix
    (PDF 1.7, 9.4.2) carries scale and direction; glyphs are 2-byte ids (Identity-H).

    Args:
        line: Polygon in OCR pixels.
        to_pdf: OCR pixels -> PDF user space (points, y upwards).
    """
    a, b, c, d, e, f = to_pdf
    p0, p1, p2, p3 = (pymupdf.Point(a * x + c * y + e, b * x + d * y + f) for x, y in line.polygon)
    width = (abs(p1 - p0) + abs(p2 - p3)) / 2
    height = (abs(p3 - p0) + abs(p2 - p1)) / 2
    if width <= 0 or height <= 0:
        return ""
    along = (p1 - p0) / abs(p1 - p0) if abs(p1 - p0) > 0 else pymupdf.Point(1, 0)
    up = pymupdf.Point(-along.y, along.x)  # y-up space: a quarter turn anticlockwise
    fontsize = height / (_FONT.ascender - _FONT.descender)
    origin = p0 - up * (_FONT.ascender * fontsize)
    glyphs = [_glyph(c) for c in line.text]
    natural = sum(advance for _, advance in glyphs) * fontsize
    scale = width / natural if natural > 0 else 1.0
    matrix = (along.x * scale, along.y * scale, up.x, up.y, origin.x, origin.y)
    codes = "".join(f"{gid:04x}" for gid, _ in glyphs)
    return (
        f"BT /{_FONT_NAME} {fontsize:.3f} Tf 3 Tr "
        + " ".join(f"{v:.4f}" for v in matrix)
        + f" Tm <{codes}> Tj ET\n"
    )


class _TextLayer:
    """Lays OCR text on the pages of one document, embedding the font only once.

    The first page with text embeds the font (``Page.insert_font``); later pages get a
    reference to the same font object in their ``/Resources /Font`` dictionary. (One
    embedding per page cost 5 ms each and was most of the time to assemble a document
    whose pages were already read.)
    """

    def __init__(self) -> None:
        self.font_xref = 0

    def add(self, page: pymupdf.Page, ocr: OcrResult, to_page: pymupdf.Matrix) -> None:
        """Write every OCR line as invisible text (render mode 3) in one content stream,
        drawn after the page's own content (which is wrapped in ``q``/``Q`` first);
        then turn a page the OCR found turned (``ocr.rotation``, degrees clockwise) by
        adding to its ``/Rotate``, so it shows upright (the text turns with it).

        Args:
            to_page: OCR pixels -> PyMuPDF page space (unrotated, y downwards).
        """
        if not ocr.lines:
            return
        doc = page.parent
        if self.font_xref:
            _set_font_resource(doc, page.xref, self.font_xref)
        else:
            self.font_xref = page.insert_font(fontname=_FONT_NAME, fontbuffer=_FONT.buffer)
        to_pdf = to_page * ~page.transformation_matrix
        body = "".join(_line_operators(line, to_pdf) for line in lines_in_reading_order(ocr))
        page.wrap_contents()
        xref = doc.get_new_xref()
        doc.update_object(xref, "<<>>")
        doc.update_stream(xref, body.encode("ascii"))
        contents = [*page.get_contents(), xref]
        doc.xref_set_key(page.xref, "Contents", "[" + " ".join(f"{x} 0 R" for x in contents) + "]")
        if ocr.rotation:
            page.set_rotation((page.rotation + ocr.rotation) % 360)


def _set_font_resource(doc: pymupdf.Document, page_xref: int, font_xref: int) -> None:
    """Name ``font_xref`` as our font in the page's ``/Resources /Font`` dictionary,
    following ``/Resources`` and ``/Font`` where they are indirect objects (PyMuPDF's
    path keys cannot cross those). A page's resources are its own after
    ``insert_pdf``, which copies inherited attributes onto the page. A page that names
    our font already (a PDF scanhopper wrote, OCR'd again) keeps it, as with
    ``Page.insert_font``."""
    xref, path = page_xref, ""
    for key in ("Resources", "Font"):
        kind, value = doc.xref_get_key(xref, path + key)
        if kind == "xref":
            xref, path = int(value.split()[0]), ""
        else:
            path += key + "/"
    if doc.xref_get_key(xref, path + _FONT_NAME)[0] == "null":
        doc.xref_set_key(xref, path + _FONT_NAME, f"{font_xref} 0 R")


def _image_page(
    doc: pymupdf.Document, item: PdfPage, default_dpi: float, layer: _TextLayer
) -> None:
    """Add an image page: its size from pixels and DPI, the scan's bytes kept.

    A JPEG keeps its bytes (DCTDecode), a PNG its compressed image data (FlateDecode
    with PNG predictors); their EXIF rotation is applied by placement. Anything else
    (TIFF frames, BMP, WebP, mirrored orientations, PNG with alpha or interlacing) is
    turned upright and stored losslessly.
    """
    source, ocr = item.source, item.ocr
    try:
        with source.open() as path, Image.open(path) as im:
            im.seek(source.index)
            chunks = _png_chunks(path.read_bytes()) if im.format == "PNG" else {}
            # Pillow finds a PNG's EXIF only by decoding the whole image: skip that when
            # the file has no eXIf chunk.
            has_exif = im.format != "PNG" or b"eXIf" in chunks
            orientation = im.getexif().get(274, 1) if has_exif else 1
            kept = im.format in ("JPEG", "PNG") and orientation in _EXIF_ROTATION
            width, height = im.size[::-1] if orientation in (6, 8) else im.size
            dpi = ocr.dpi if ocr is not None else file_dpi(im, default_dpi)
            data = path.read_bytes() if kept and im.format == "JPEG" else None
            xref = _png_image(doc, chunks) if kept and im.format == "PNG" else 0
            if xref is None:  # a PNG that PDF cannot carry as it is
                kept, data, xref = False, None, 0
            stream = data if kept else _lossless(ImageOps.exif_transpose(im))
    except _NOT_THE_CONTENT:
        raise
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        OSError,
        EOFError,
    ) as exc:
        raise PageSourceError(source.path, source.index, f"not a readable image ({exc})") from exc
    page = doc.new_page(width=width * 72.0 / dpi, height=height * 72.0 / dpi)
    page.insert_image(
        page.rect,
        stream=None if xref else stream,
        xref=xref,
        rotate=_EXIF_ROTATION[orientation] if kept else 0,
        keep_proportion=False,
    )
    if ocr is not None:
        layer.add(page, ocr, pymupdf.Matrix(72.0 / ocr.dpi, 72.0 / ocr.dpi))


def _png_chunks(data: bytes) -> dict[bytes, list[bytes]]:
    """A PNG file's chunks by type, in file order (PNG spec, 5.3)."""
    chunks: dict[bytes, list[bytes]] = {}
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.setdefault(data[pos + 4 : pos + 8], []).append(data[pos + 8 : pos + 8 + length])
        pos += 12 + length
    return chunks


def _png_image(doc: pymupdf.Document, chunks: dict[bytes, list[bytes]]) -> int | None:
    """Embed a PNG's compressed data as an image XObject without re-encoding it.

    PDF's FlateDecode filter with PNG predictors (``/Predictor 15``: PDF 1.7, 7.4.4.4)
    reads the concatenated IDAT chunks as they are (as img2pdf does). Possible for
    non-interlaced grey, RGB and palette images without transparency (PNG spec,
    11.2.2 IHDR, 11.3.2 tRNS).

    Returns:
        The new image's xref, or ``None`` when the PNG has to be re-encoded.
    """
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"][0])
    if interlace or color not in (0, 2, 3) or b"tRNS" in chunks or b"IDAT" not in chunks:
        return None
    if color == 3:
        palette = chunks[b"PLTE"][0]
        space = f"[/Indexed /DeviceRGB {len(palette) // 3 - 1} <{palette.hex()}>]"
    else:
        space = "/DeviceGray" if color == 0 else "/DeviceRGB"
    colors = 3 if color == 2 else 1
    xref = doc.get_new_xref()
    doc.update_object(
        xref,
        f"<</Type/XObject/Subtype/Image/Width {width}/Height {height}/ColorSpace {space}"
        f"/BitsPerComponent {depth}>>",
    )
    doc.update_stream(xref, b"".join(chunks[b"IDAT"]), compress=0)
    doc.xref_set_key(xref, "Filter", "/FlateDecode")
    doc.xref_set_key(
        xref,
        "DecodeParms",
        f"<</Predictor 15/Colors {colors}/BitsPerComponent {depth}/Columns {width}>>",
    )
    return xref


def _lossless(im: Image.Image) -> bytes:
    """Encode an upright image losslessly for PDF (PNG; bilevel stays 1 bit)."""
    if im.mode not in ("1", "L", "RGB", "LA", "RGBA", "P"):
        im = im.convert("RGB")
    buffer = io.BytesIO()
    im.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _pdf_page(
    doc: pymupdf.Document,
    src: pymupdf.Document,
    item: PdfPage,
    policy: TextPolicy,
    layer: _TextLayer,
) -> None:
    """Copy a PDF page as it is and lay the text layer on top.

    ``src`` is the page's source document, opened once per chunk. ``final=0`` keeps
    PyMuPDF's graft map for it, so objects its pages share (a font or an image used on
    every page) are copied once per chunk (:func:`assemble_pdf` merges the chunks'
    copies). Form fields are copied only from a PDF that has them: for every other
    PDF ``widgets=1`` would only load each of its pages on every call (PyMuPDF's
    ``repair_flat_rbgs``), which made copying a long PDF quadratic in its page count.
    """
    source = item.source
    _load_page(src, source)
    doc.insert_pdf(
        src,
        from_page=source.index,
        to_page=source.index,
        widgets=bool(src.is_form_pdf),
        final=0,
    )
    page = doc[-1]
    if item.ocr is None:
        return
    if policy is not TextPolicy.skip:  # an earlier OCR layer gives way to the new one
        _remove_invisible_text(page)
    zoom = 72.0 / item.ocr.dpi
    layer.add(page, item.ocr, pymupdf.Matrix(zoom, zoom) * page.derotation_matrix)


def _remove_invisible_text(page: pymupdf.Page) -> None:
    """Remove text drawn in render mode 3 (an earlier OCR layer), keeping images and
    vector graphics (redactions limited to the invisible spans' boxes)."""
    boxes = [pymupdf.Rect(span["bbox"]) for span in page.get_texttrace() if span["type"] == 3]
    for box in boxes:
        page.add_redact_annot(box * page.derotation_matrix)
    if boxes:
        page.apply_redactions(
            images=pymupdf.PDF_REDACT_IMAGE_NONE,
            graphics=pymupdf.PDF_REDACT_LINE_ART_NONE,
            text=pymupdf.PDF_REDACT_TEXT_REMOVE,
        )


def _batched(pages: Iterable[PdfPage], size: int) -> Iterable[list[PdfPage]]:
    """Consecutive lists of ``size`` pages (the last may be shorter); Python 3.11 has no
    ``itertools.batched``."""
    iterator = iter(pages)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _write_chunk(pages: list[PdfPage], policy: TextPolicy, default_dpi: float) -> pymupdf.Document:
    """Build ``pages`` in a new document, fonts subset (unused objects are dropped and
    streams compressed by the whole save at the end of :func:`assemble_pdf`)."""
    doc = pymupdf.open()
    sources: dict[PageSource, pymupdf.Document] = {}
    layer = _TextLayer()
    with ExitStack() as opened:  # each source PDF open once for the chunk
        for item in pages:
            if item.source.kind == "pdf":
                whole = replace(item.source, index=0)
                if whole not in sources:
                    sources[whole] = opened.enter_context(_opened_pdf(whole))
                _pdf_page(doc, sources[whole], item, policy, layer)
            else:
                _image_page(doc, item, default_dpi, layer)
    doc.subset_fonts()
    used = {c for item in pages if item.ocr for line in item.ocr.lines for c in line.text}
    _trim_font_tables(doc, used)
    return doc


def _trim_font_tables(doc: pymupdf.Document, used: set[str]) -> None:
    """Shrink our font's ``/W`` widths and ``/ToUnicode`` map to the glyphs used.

    ``subset_fonts`` empties unused glyphs but keeps both tables for the whole font
    (about 6 KB compressed); text is encoded Identity-H with CID = glyph id (PDF 1.7,
    9.7.4.2 and 9.10.3), so the used glyph ids are the font's glyph indexes.
    """
    glyphs: dict[int, str] = {}
    for char in sorted(used):
        gid = _FONT.has_glyph(ord(char))
        if gid:
            glyphs.setdefault(gid, char)
    xrefs = {font[0] for page in doc for font in page.get_fonts() if font[4] == _FONT_NAME}
    for xref in xrefs:
        descendant = int(doc.xref_get_key(xref, "DescendantFonts")[1].strip("[]").split()[0])
        widths = " ".join(
            f"{gid} [{round(_FONT.glyph_advance(ord(char)) * 1000)}]"
            for gid, char in sorted(glyphs.items())
        )
        doc.xref_set_key(descendant, "W", f"[{widths}]")
        to_unicode = int(doc.xref_get_key(xref, "ToUnicode")[1].split()[0])
        doc.update_stream(to_unicode, _to_unicode_cmap(glyphs))


def _to_unicode_cmap(glyphs: dict[int, str]) -> bytes:
    """A ToUnicode CMap (Adobe TN 5411) mapping 2-byte glyph ids to UTF-16BE text."""
    entries = [
        f"<{gid:04x}> <{char.encode('utf-16-be').hex()}>" for gid, char in sorted(glyphs.items())
    ]
    blocks = "".join(
        f"{len(chunk)} beginbfchar\n" + "\n".join(chunk) + "\nendbfchar\n"
        for chunk in (entries[i : i + 100] for i in range(0, len(entries), 100))
    )
    return (
        "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
        "/CIDSystemInfo <</Registry(Adobe)/Ordering(UCS)/Supplement 0>> def\n"
        "/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
        "1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n"
        f"{blocks}endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n"
    ).encode("ascii")


def assemble_pdf(
    pages: Iterable[PdfPage],
    dest: Path,
    *,
    title: str,
    policy: TextPolicy = TextPolicy.skip,
    chunk_pages: int = 25,
    image_dpi: float = 300.0,
    scratch: Path | None = None,
) -> int:
    """Write one searchable PDF from pages in order, in bounded memory.

    Pages are built ``chunk_pages`` at a time in a fresh in-memory document, fonts
    subset, then appended to a first temp file with an incremental save, so memory
    depends on the chunk size and not on the page count. That file is then saved whole
    (MuPDF ``garbage=4``, which streams objects rather than holding them: measured
    150 MB peak for a 460 MB PDF) into a second temp file: one revision, and the
    copies that chunks made of objects their source PDF shares across pages (fonts)
    merged back into one. Source PDFs' outlines (bookmarks), which copying pages leaves
    behind, are carried over. The whole save writes ``dest``: make it atomic with
    :func:`daemon.files.write_atomically`. A page that cannot be read stops before
    ``dest`` is written; the temp file is always removed.

    Args:
        pages: Pages in document order; may be a generator.
        dest: Where the PDF is written.
        title: Document title (metadata).
        policy: What was done with PDF pages that had text (under ``redo`` and
            ``force``, a page's old invisible text is removed before the new layer is
            added).
        chunk_pages: Pages built in memory at once.
        image_dpi: DPI of an image page without OCR whose file states none.
        scratch: Folder for the temp file (default: ``dest``'s folder).

    Returns:
        The number of pages written.

    Raises:
        PageSourceError: a page cannot be read (naming its file and page).
        daemon.files.SourceChangedError: a source changed since intake read it.
        OSError: the temp file or ``dest`` cannot be written (MuPDF's write errors,
            e.g. a full disk, are raised as ``OSError``).
        ValueError: ``pages`` is empty.
    """
    chunks = temp_path_for((scratch or dest.parent) / "chunks")
    try:
        count, placed = _append_chunks(pages, chunks, title, policy, chunk_pages, image_dpi)
        if count == 0:
            raise ValueError(f"{dest}: a document needs at least one page")
        with pymupdf.open(chunks) as doc:
            _copy_outlines(doc, placed)
            with _writing(dest), open(dest, "wb") as out:
                doc.save(_Stream(out), garbage=4, deflate=True, use_objstms=1)
    finally:
        chunks.unlink(missing_ok=True)
    return count


class _Stream:
    """A binary file as PyMuPDF's ``save`` takes a stream: without a ``name``, which
    would make it save to that path (and MuPDF removes a file before saving over it,
    which ``/proc/self/fd/N`` does not allow)."""

    def __init__(self, file: io.BufferedWriter) -> None:
        self.file = file

    def write(self, data: bytes) -> int:
        return self.file.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def truncate(self, size: int | None = None) -> int:
        return self.file.truncate(size)


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Raise MuPDF's errors while writing ``path`` as ``OSError`` (the environment's
    fault: a full disk, an I/O error), never as a fault of the pages."""
    try:
        yield
    except Exception as exc:  # MuPDF's FzError* classes, our stream's OSError inside them
        if "No space left" in str(exc) or "Errno 28" in str(exc):
            raise OSError(errno.ENOSPC, "cannot write the PDF: no space left on device") from exc
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OSError(errno.EIO, f"cannot write the PDF: {first}") from exc


def _append_chunks(
    pages: Iterable[PdfPage],
    path: Path,
    title: str,
    policy: TextPolicy,
    chunk_pages: int,
    image_dpi: float,
) -> tuple[int, dict[PageSource, dict[int, int]]]:
    """Write ``pages`` to ``path`` a chunk at a time (see :func:`assemble_pdf`).

    Returns:
        The page count, and for each source PDF, its page indexes mapped to the
        1-based numbers of the output pages they became.
    """
    count = 0
    placed: dict[PageSource, dict[int, int]] = {}
    for chunk in _batched(pages, chunk_pages):
        for number, item in enumerate(chunk, count + 1):
            if item.source.kind == "pdf":
                whole = replace(item.source, index=0)
                placed.setdefault(whole, {})[item.source.index] = number
        part = _write_chunk(chunk, policy, image_dpi)
        if count == 0:
            now = datetime.now(UTC).strftime("D:%Y%m%d%H%M%SZ")
            part.set_metadata(
                {
                    "title": title,
                    "producer": f"scanhopper {__version__}",
                    "creator": f"scanhopper {__version__}",
                    "creationDate": now,
                    "modDate": now,
                }
            )
            with _writing(path):
                part.save(path)
        else:
            with pymupdf.open(path) as out, _writing(path):
                out.insert_pdf(part)
                out.save(path, incremental=True, encryption=pymupdf.PDF_ENCRYPT_KEEP)
        count += len(chunk)
        part.close()
    return count, placed


def _copy_outlines(doc: pymupdf.Document, placed: dict[PageSource, dict[int, int]]) -> None:
    """Give ``doc`` the outlines (bookmarks) of the source PDFs its pages come from,
    which copying pages leaves behind: each PDF's tree in the order its pages appear,
    each entry pointing at the output page its target became (same spot on the page);
    an entry whose page is not in ``doc`` (a failed page) stays, without a target.
    (MuPDF reads a damaged outline as far as it can: a loop ends it, a bad entry comes
    without a target.)
    """
    toc: list[list] = []
    for source, pages in sorted(placed.items(), key=lambda item: min(item[1].values())):
        with _opened_pdf(source) as src:
            entries = src.get_toc(simple=False)
        for level, title, page, dest in entries:
            number = pages.get(page - 1, -1)
            if number > 0 and dest.get("kind") == pymupdf.LINK_GOTO and "to" in dest:
                toc.append([level, title, number, {"kind": pymupdf.LINK_GOTO, "to": dest["to"]}])
            else:
                toc.append([level, title, number])
    if toc:
        doc.set_toc(toc)
