"""Ground truth: scanned-looking pages whose text is known, for measuring OCR accuracy.

Makes two pages in each of three languages (English, French, simplified Chinese) from
public-domain texts embedded below: a born-digital page (a heading, then body text at
10 to 12 pt, in one column or two) is set with PyMuPDF, rasterised at 300 dpi in
grey and degraded like a scan (a small skew within +-1.5 degrees, a slight Gaussian
blur, a little contrast loss, noise, then JPEG at quality 70 to 80). Everything random
comes from a fixed seed, so every run writes the same files.

Writes into OUT_DIR, for each language code ``en``, ``fr``, ``zh``:

- ``<code>.pdf``: the degraded pages, each page one JPEG embedded unchanged, the page
  the size of the image at 300 dpi: the file OCR tools are given;
- ``<code>-p<N>.txt`` (N 1-based): that page's own text, one printed line per text
  line, in reading order (heading, then the left column, then the right one).

Usage, from the repository root: ``python -m bench.groundtruth OUT_DIR``; other
benchmarks call :func:`generate`.
"""

# Chinese text and line breaking use full-width punctuation on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

import argparse
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pymupdf
from PIL import Image, ImageFilter

__all__ = ["DPI", "SEED", "GroundTruthSet", "generate", "main"]

DPI = 300
"""Resolution of the degraded page images, dots per inch."""

SEED = 9
"""Seed of every random choice (issue 9): the same files on every run."""

_A4 = (595.0, 842.0)
_LETTER = (612.0, 792.0)
_MARGIN = 72.0
_GUTTER = 24.0
_LEADING = 1.3  # line height / font size
_CLOSING = set("，。、；：？！）》」』”’…—")  # CJK marks that may not start a line


@dataclass(frozen=True)
class GroundTruthSet:
    """One language's degraded PDF and the text of each of its pages."""

    language: str
    """Language code: ``en``, ``fr`` or ``zh`` (simplified Chinese)."""
    tesseract: str
    """Tesseract's name of the language (``eng``, ``fra``, ``chi_sim``)."""
    pdf: Path
    """The degraded pages: one JPEG each, embedded unchanged, 300 dpi."""
    truths: list[str]
    """Each page's text, index 0-based: its lines in reading order, joined by newlines."""

    @property
    def name(self) -> str:
        """The set's name in reports: ``groundtruth-<language>``."""
        return f"groundtruth-{self.language}"


@dataclass(frozen=True)
class _Page:
    heading: str
    paragraphs: list[str]
    columns: int
    paper: tuple[float, float]


# Jane Austen, Pride and Prejudice (1813), chapter 1; Charles Dickens, A Tale of Two
# Cities (1859), book 1, chapter 1. Straight quotes, so the figures measure reading,
# not quote styles.
_ENGLISH = [
    _Page(
        "Pride and Prejudice. Chapter 1",
        [
            "It is a truth universally acknowledged, that a single man in possession of a "
            "good fortune, must be in want of a wife.",
            "However little known the feelings or views of such a man may be on his first "
            "entering a neighbourhood, this truth is so well fixed in the minds of the "
            "surrounding families, that he is considered the rightful property of some one "
            "or other of their daughters.",
            '"My dear Mr. Bennet," said his lady to him one day, "have you heard that '
            'Netherfield Park is let at last?"',
            "Mr. Bennet replied that he had not.",
            '"But it is," returned she; "for Mrs. Long has just been here, and she told me '
            'all about it."',
            "Mr. Bennet made no answer.",
            '"Do you not want to know who has taken it?" cried his wife impatiently.',
            '"You want to tell me, and I have no objection to hearing it."',
            "This was invitation enough.",
            '"Why, my dear, you must know, Mrs. Long says that Netherfield is taken by a '
            "young man of large fortune from the north of England; that he came down on "
            "Monday in a chaise and four to see the place, and was so much delighted with "
            "it, that he agreed with Mr. Morris immediately; that he is to take possession "
            "before Michaelmas, and some of his servants are to be in the house by the end "
            'of next week."',
        ],
        1,
        _A4,
    ),
    _Page(
        "A Tale of Two Cities. The Period",
        [
            "It was the best of times, it was the worst of times, it was the age of wisdom, "
            "it was the age of foolishness, it was the epoch of belief, it was the epoch of "
            "incredulity, it was the season of Light, it was the season of Darkness, it was "
            "the spring of hope, it was the winter of despair, we had everything before us, "
            "we had nothing before us, we were all going direct to Heaven, we were all going "
            "direct the other way; in short, the period was so far like the present period, "
            "that some of its noisiest authorities insisted on its being received, for good "
            "or for evil, in the superlative degree of comparison only.",
            "There were a king with a large jaw and a queen with a plain face, on the throne "
            "of England; there were a king with a large jaw and a queen with a fair face, on "
            "the throne of France. In both countries it was clearer than crystal to the "
            "lords of the State preserves of loaves and fishes, that things in general were "
            "settled for ever.",
            "It was the year of Our Lord one thousand seven hundred and seventy-five. "
            "Spiritual revelations were conceded to England at that favoured period, as at "
            "this. Mrs. Southcott had recently attained her five-and-twentieth blessed "
            "birthday, of whom a prophetic private in the Life Guards had heralded the "
            "sublime appearance by announcing that arrangements were made for the "
            "swallowing up of London and Westminster.",
        ],
        2,
        _LETTER,
    ),
]

# Victor Hugo, Les Miserables (1862), tome I, livre I, chapitre 1; Jules Verne, Le Tour
# du monde en quatre-vingts jours (1872), chapitre I.
_FRENCH = [
    _Page(
        "Les Misérables. Monsieur Myriel",
        [
            "En 1815, M. Charles-François-Bienvenu Myriel était évêque de Digne. C'était un "
            "vieillard d'environ soixante-quinze ans ; il occupait le siège de Digne depuis "
            "1806.",
            "Quoique ce détail ne touche en aucune manière au fond même de ce que nous avons "
            "à raconter, il n'est peut-être pas inutile, ne fût-ce que pour être exact en "
            "tout, d'indiquer ici les bruits et les propos qui avaient couru sur son compte "
            "au moment où il était arrivé dans le diocèse. Vrai ou faux, ce qu'on dit des "
            "hommes tient souvent autant de place dans leur vie et surtout dans leur "
            "destinée que ce qu'ils font. M. Myriel était fils d'un conseiller au parlement "
            "d'Aix ; noblesse de robe. On contait de lui que son père, le réservant pour "
            "hériter de sa charge, l'avait marié de fort bonne heure, à dix-huit ou vingt "
            "ans, suivant un usage assez répandu dans les familles parlementaires.",
            "La révolution survint, les événements se précipitèrent, les familles "
            "parlementaires décimées, chassées, traquées, se dispersèrent. M. Charles "
            "Myriel, dès les premiers jours de la révolution, émigra en Italie. Sa femme y "
            "mourut d'une maladie de poitrine dont elle était atteinte depuis longtemps. "
            "Ils n'avaient point d'enfants.",
        ],
        1,
        _A4,
    ),
    _Page(
        "Le Tour du monde en quatre-vingts jours",
        [
            "En l'année 1872, la maison portant le numéro 7 de Saville-row, Burlington "
            "Gardens, maison dans laquelle Sheridan mourut en 1814, était habitée par "
            "Phileas Fogg, esq., l'un des membres les plus singuliers et les plus remarqués "
            "du Reform-Club de Londres, bien qu'il semblât prendre à tâche de ne rien faire "
            "qui pût attirer l'attention.",
            "À l'un des plus grands orateurs qui honorent l'Angleterre, succédait donc ce "
            "Phileas Fogg, personnage énigmatique, dont on ne savait rien, sinon que c'était "
            "un fort galant homme et l'un des plus beaux gentlemen de la haute société "
            "anglaise.",
            "On disait qu'il ressemblait à Byron, par la tête, car il était irréprochable "
            "quant aux pieds, mais un Byron à moustaches et à favoris, un Byron impassible, "
            "qui aurait vécu mille ans sans vieillir.",
            "Anglais, à coup sûr, Phileas Fogg n'était peut-être pas Londonner. On ne "
            "l'avait jamais vu ni à la Bourse, ni à la Banque, ni dans aucun des comptoirs "
            "de la Cité. Ni les bassins ni les docks de Londres n'avaient jamais reçu un "
            "navire ayant pour armateur Phileas Fogg. Ce gentleman ne figurait dans aucun "
            "comité d'administration. « Il est riche », disait-on, « mais on ne sait d'où "
            "lui vient sa fortune. »",
        ],
        2,
        _LETTER,
    ),
]

# Tao Yuanming, The Peach Blossom Spring (421); Lu Xun, Kong Yiji (1919, its author
# died in 1936): both in the public domain.
_CHINESE = [
    _Page(
        "桃花源记",
        [
            "晋太元中，武陵人捕鱼为业。缘溪行，忘路之远近。忽逢桃花林，夹岸数百步，中无杂树，"
            "芳草鲜美，落英缤纷。渔人甚异之，复前行，欲穷其林。",
            "林尽水源，便得一山，山有小口，仿佛若有光。便舍船，从口入。初极狭，才通人。复行数"
            "十步，豁然开朗。土地平旷，屋舍俨然，有良田、美池、桑竹之属。阡陌交通，鸡犬相闻。"
            "其中往来种作，男女衣着，悉如外人。黄发垂髫，并怡然自乐。",
            "见渔人，乃大惊，问所从来。具答之。便要还家，设酒杀鸡作食。村中闻有此人，咸来问讯。"
            "自云先世避秦时乱，率妻子邑人来此绝境，不复出焉，遂与外人间隔。问今是何世，乃不知"
            "有汉，无论魏晋。此人一一为具言所闻，皆叹惋。余人各复延至其家，皆出酒食。停数日，"
            "辞去。此中人语云：“不足为外人道也。”",
            "既出，得其船，便扶向路，处处志之。及郡下，诣太守，说如此。太守即遣人随其往，寻向"
            "所志，遂迷，不复得路。",
            "南阳刘子骥，高尚士也，闻之，欣然规往。未果，寻病终。后遂无问津者。",
        ],
        1,
        _A4,
    ),
    _Page(
        "孔乙己",
        [
            "鲁镇的酒店的格局，是和别处不同的：都是当街一个曲尺形的大柜台，柜里面预备着热水，"
            "可以随时温酒。做工的人，傍午傍晚散了工，每每花四文铜钱，买一碗酒，这是二十多年前"
            "的事，现在每碗要涨到十文，靠柜外站着，热热的喝了休息；倘肯多花一文，便可以买一碟"
            "盐煮笋，或者茴香豆，做下酒物了，如果出到十几文，那就能买一样荤菜，但这些顾客，多"
            "是短衣帮，大抵没有这样阔绰。只有穿长衫的，才踱进店面隔壁的房子里，要酒要菜，慢慢"
            "地坐喝。",
            "我从十二岁起，便在镇口的咸亨酒店里当伙计，掌柜说，样子太傻，怕侍候不了长衫主顾，"
            "就在外面做点事罢。外面的短衣主顾，虽然容易说话，但唠唠叨叨缠夹不清的也很不少。他"
            "们往往要亲眼看着黄酒从坛子里舀出，看过壶子底里有水没有，又亲看将壶子放在热水里，"
            "然后放心：在这严重监督下，羼水也很为难。所以过了几天，掌柜又说我干不了这事。幸亏"
            "荐头的情面大，辞退不得，便改为专管温酒的一种无聊职务了。",
            "我从此便整天的站在柜台里，专管我的职务。虽然没有什么失职，但总觉得有些单调，有些"
            "无聊。掌柜是一副凶脸孔，主顾也没有好声气，教人活泼不得；只有孔乙己到店，才可以笑"
            "几声，所以至今还记得。",
        ],
        2,
        _LETTER,
    ),
]

_LANGUAGES = [
    ("en", "eng", _ENGLISH, ("tiro", "tibo"), ("helv", "hebo")),
    ("fr", "fra", _FRENCH, ("tiro", "tibo"), ("helv", "hebo")),
    ("zh", "chi_sim", _CHINESE, ("cjk", "cjk"), ("cjk", "cjk")),
]


def _wrap(text: str, font: pymupdf.Font, size: float, width: float, indent: float) -> list[str]:
    """Break one paragraph into lines no wider than ``width`` points (the first line
    ``indent`` points narrower): between words, or between any two CJK characters
    except before a closing mark."""
    cjk = not text.isascii() and " " not in text
    tokens = list(text) if cjk else text.split()
    lines: list[str] = []
    line = ""
    for token in tokens:
        candidate = token if not line else line + ("" if cjk else " ") + token
        room = width - (indent if not lines else 0)
        if line and font.text_length(candidate, size) > room and token not in _CLOSING:
            lines.append(line)
            line = token
        else:
            line = candidate
    lines.append(line)
    return lines


def _set_page(
    page: _Page, fonts: tuple[str, str], rng: np.random.Generator
) -> tuple[pymupdf.Document, list[str]]:
    """A born-digital one-page PDF of ``page`` and its lines in reading order."""
    body, bold = pymupdf.Font(fonts[0]), pymupdf.Font(fonts[1])
    size = float(rng.choice([10.0, 10.5, 11.0, 12.0]))
    heading_size = size + 6
    width, height = page.paper
    doc = pymupdf.open()
    pdf_page = doc.new_page(width=width, height=height)
    writer = pymupdf.TextWriter(pdf_page.rect)
    # Headings are centred over the text block.
    text_width = width - 2 * _MARGIN
    heading_width = bold.text_length(page.heading, heading_size)
    y = _MARGIN + heading_size
    writer.append(((width - heading_width) / 2, y), page.heading, font=bold, fontsize=heading_size)
    y += heading_size * 1.2
    indent = 2 * size  # two ems: two CJK characters
    column_width = (text_width - _GUTTER * (page.columns - 1)) / page.columns
    # (line, is the first line of a paragraph) for the whole text, then cut in columns.
    wrapped: list[tuple[str, bool]] = []
    for paragraph in page.paragraphs:
        lines = _wrap(paragraph, body, size, column_width, indent)
        wrapped += [(line, n == 0) for n, line in enumerate(lines)]
    per_column = math.ceil(len(wrapped) / page.columns)
    top = y + size * 0.8
    for column in range(page.columns):
        x0 = _MARGIN + column * (column_width + _GUTTER)
        y = top
        for line, first in wrapped[column * per_column : (column + 1) * per_column]:
            if first and y > top:
                y += size * 0.5  # paragraph space
            y += size * _LEADING
            writer.append((x0 + (indent if first else 0), y), line, font=body, fontsize=size)
    writer.write_text(pdf_page)
    return doc, [page.heading] + [line for line, _ in wrapped]


def _degrade(doc: pymupdf.Document, rng: np.random.Generator) -> bytes:
    """Rasterise the page at :data:`DPI` in grey and make it look scanned; JPEG bytes."""
    pix = doc[0].get_pixmap(dpi=DPI, colorspace=pymupdf.csGRAY, alpha=False)
    image = Image.frombytes("L", (pix.width, pix.height), pix.samples)
    angle = float(rng.uniform(-1.5, 1.5))
    image = image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=255)
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.6, 1.0))))
    pixels = np.asarray(image, dtype=np.float32)
    # Grey paper, not quite black ink, and sensor noise.
    pixels = 28 + pixels * (228 - 28) / 255
    pixels += rng.normal(0, 7, size=pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(70, 81)), dpi=(DPI, DPI))
    return buffer.getvalue()


def generate(out_dir: Path) -> list[GroundTruthSet]:
    """Write the ground-truth PDFs and texts into ``out_dir`` (created if need be).

    Args:
        out_dir: Folder for ``<code>.pdf`` and ``<code>-p<N>.txt`` (see the module
            docstring); existing files of those names are replaced.

    Returns:
        One set per language, English, French, then Chinese.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    sets = []
    for code, tesseract, pages, serif, sans in _LANGUAGES:
        truths: list[str] = []
        with pymupdf.open() as out:
            for number, page in enumerate(pages, start=1):
                born, lines = _set_page(page, serif if number % 2 else sans, rng)
                with born:
                    jpeg = _degrade(born, rng)
                with Image.open(io.BytesIO(jpeg)) as image:
                    width, height = image.size
                scan = out.new_page(width=width * 72 / DPI, height=height * 72 / DPI)
                scan.insert_image(scan.rect, stream=jpeg)
                truths.append("\n".join(lines))
                (out_dir / f"{code}-p{number}.txt").write_text(truths[-1] + "\n")
            out.save(out_dir / f"{code}.pdf", garbage=3, deflate=True, no_new_id=True)
        sets.append(GroundTruthSet(code, tesseract, out_dir / f"{code}.pdf", truths))
    return sets


def main(args: list[str] | None = None) -> None:
    """Command line: ``python -m bench.groundtruth OUT_DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    options = parser.parse_args(args)
    for found in generate(options.out_dir):
        with pymupdf.open(found.pdf) as doc:
            pages = doc.page_count
        lines = sum(len(t.splitlines()) for t in found.truths)
        print(f"{found.pdf}: {found.language} ({found.tesseract}), {pages} pages, {lines} lines")


if __name__ == "__main__":
    main()
