"""Benchmark: scanhopper against OCRmyPDF + Tesseract on the same PDFs, in one run.

scanhopper is the real daemon, started as a user starts it (``python -m daemon -c
FILE run``) on its built-in defaults, the config file naming only its folders (in a
temp dir; ``SCANHOPPER_*`` variables are dropped). With ``--before [REV]`` a second
daemon, ``scanhopper@REV``, runs scanhopper's own code of git revision ``REV`` (its
``daemon`` package, taken with ``git archive`` into the work folder and run from
there, in this environment) on that code's built-in defaults, the same config file.
``REV`` defaults to :data:`BEFORE_ISSUE_9`, the defaults issue 9 measured as today's
(one worker x 2 threads, detection at nearly full resolution, recognition in batches
of 8, PaddleX's own ONNX Runtime runner). The earlier way, today's code given the old
settings, measured 254.5 s where the old code itself took 166.6 s on the same pages in
the same run (today's runner frees ONNX Runtime's memory between calls, which costs
little at 1280 px detection and much at full resolution; cardinal's sideways pages
are read twice today), so it flattered today's defaults: gone. Each
round starts fresh daemons (fresh state, so no page's OCR is reused from an earlier
round), waits for ``daemon_ready`` and publishes a one-page warm-up PDF to each, so
model loading is not timed. A timing is then from renaming the PDF into the inbox to
its searchable PDF appearing in the outbox: it includes the intake's wait for a stable
file (``intake.stable_seconds``). The peer, ``tesseract``, is ``ocrmypdf --force-ocr -j
N -l LANG --output-type pdf IN OUT`` with N = ``daemon.config.available_cores()``, the
CPU budget of scanhopper's defaults (``workers.devices = "auto"`` shares those cores
among its CPU workers), timed from start to exit; a warm-up run per language comes
first. The header gives each scanhopper's resolved settings (``Settings``: workers,
``ocr.cpu_threads``, engine, detection resize) and OCRmyPDF's command.

Sets: ``groundtruth`` are the pages of :mod:`bench.groundtruth` (one PDF per language;
their text is known) and ``corpus`` the scans
``/work/shared/corpus/pdf/{multipage,ccitt,jbig2,skew,francais,cardinal}.pdf`` (speed
only; Tesseract reads them as ``eng``, ``francais.pdf`` as ``fra``).

Prints, per set and in total: pages; seconds (median of ``--rounds`` runs; within a
round the tools' order is reversed from set to set, and flips each round, so drift
hits all) and pages/s of each tool; the speed ratio ``scanhopper/tesseract`` and, with
``--before``, ``scanhopper/scanhopper@REV`` (pages/s over pages/s: above 1,
scanhopper is faster); the output file size of each (not like for like against
Tesseract: scanhopper keeps the scan's own JPEG bytes, while OCRmyPDF's
``--force-ocr`` output holds each page rasterised again and re-encoded, grey JPEGs
becoming RGB).
For the ground-truth sets, a column group per tool: character and word error rates
(``jiwer.cer``, ``jiwer.wer`` over the set's pages) of its text layer
(``page.get_text()`` of each output page, whitespace runs made one space; for Chinese
all whitespace removed and CER only) against the known text; the ``NFKC`` columns also
fold compatibility forms on both sides, since Tesseract writes ``,`` ``:`` ``;`` where
Chinese text has the full-width forms (U+FF0C, U+FF1A, U+FF1B): on one page of the
Chinese set that alone was about 9 points of its CER. Then a peak RSS (``VmHWM``) line
per tool, the largest over all rounds: for a scanhopper, of its largest OCR worker (all
the daemon's children, sampled every 0.2 s while it publishes, so a worker recycled
mid-round counts, and at the round's end); for Tesseract, of the largest
``tesseract`` process (its process tree polled every 0.1 s).

Needs ``pip install 'scanhopper[bench]'`` and Tesseract with its language data
(``apt-get install tesseract-ocr tesseract-ocr-fra tesseract-ocr-chi-sim``); when
something is missing it says what to install and exits with status 2.

Usage, from the repository root:
``python -m bench.peers [--rounds 3] [--sets groundtruth,corpus] [--quick] [--before [REV]]``
(``--quick``: one round on the English ground-truth set, a smoke test).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import pymupdf

from bench.daemon import CORPUS, children, peak_rss_mb, wait_for
from bench.groundtruth import generate
from daemon.config import available_cores

__all__ = ["ExitCode", "main", "run"]

CORPUS_FILES = ["multipage", "ccitt", "jbig2", "skew", "francais", "cardinal"]
"""Corpus PDFs (``pdf/<name>.pdf``) timed in the ``corpus`` set."""

SCANHOPPER, TESSERACT = "scanhopper", "tesseract"

BEFORE_ISSUE_9 = "346f2a9"
"""The last commit before issue 9's work (``--before``'s default revision)."""

_RESOLVED = """
import json
from daemon import __version__
from daemon.config import Settings
s = Settings()
print(json.dumps([__version__, [str(d) for d in s.workers.devices], s.ocr.cpu_threads,
    s.ocr.engine, s.ocr.det_limit_side_len, s.ocr.det_limit_type, s.intake.stable_seconds]))
"""
"""Prints, as JSON, what a scanhopper's built-in defaults resolve to, run by the Python
of that scanhopper's own code."""

_DEBIAN_LANGUAGE = {"eng": "tesseract-ocr-eng", "fra": "tesseract-ocr-fra"}
_DEBIAN_LANGUAGE["chi_sim"] = "tesseract-ocr-chi-sim"


class ExitCode(IntEnum):
    """Exit status of ``python -m bench.peers``."""

    ok = 0
    failed = 1
    """A tool failed on a set, or the daemon died: the table shows which."""
    missing_tools = 2
    """OCRmyPDF, Tesseract, a Tesseract language or a Python package is missing."""


@dataclass
class _Set:
    name: str
    pdf: Path
    tesseract: str
    pages: int
    truths: list[str] | None = None
    """Each page's known text (ground-truth sets only)."""

    @property
    def chinese(self) -> bool:
        return self.tesseract.startswith("chi")


@dataclass
class _Result:
    """One tool on one set, over the rounds."""

    seconds: list[float] = field(default_factory=list)
    output: Path | None = None
    """The last round's output PDF."""
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds and not self.error else None


def _missing_tools(languages: set[str]) -> list[str]:
    """Install commands for whatever the benchmark needs and does not find."""
    commands = []
    if any(importlib.util.find_spec(m) is None for m in ("ocrmypdf", "jiwer", "psutil")):
        commands.append("pip install 'scanhopper[bench]'")
    if shutil.which("tesseract") is None:
        # Debian's tesseract-ocr depends on tesseract-ocr-eng.
        packages = ["tesseract-ocr"]
        packages += [_DEBIAN_LANGUAGE[lang] for lang in sorted(languages) if lang != "eng"]
    else:
        listing = subprocess.run(
            ["tesseract", "--list-langs"], capture_output=True, text=True, timeout=60
        )
        installed = set(listing.stdout.splitlines()[1:])  # after "List of available ..."
        packages = [_DEBIAN_LANGUAGE[lang] for lang in sorted(languages) if lang not in installed]
    if packages:
        commands.append("apt-get install " + " ".join(packages))
    return commands


def _make_sets(names: Sequence[str], work: Path, quick: bool) -> list[_Set]:
    sets = []
    if "groundtruth" in names:
        for found in generate(work / "groundtruth"):
            sets.append(
                _Set(found.name, found.pdf, found.tesseract, len(found.truths), found.truths)
            )
        if quick:
            sets = sets[:1]
    if "corpus" in names and not quick:
        for name in CORPUS_FILES:
            path = CORPUS / "pdf" / f"{name}.pdf"
            with pymupdf.open(path) as doc:
                pages = doc.page_count
            sets.append(_Set(f"corpus-{name}", path, "fra" if name == "francais" else "eng", pages))
    return sets


def _make_warmup(path: Path) -> None:
    """A one-page PDF: a short line of text as a 300 dpi image, to warm both tools up."""
    with pymupdf.open() as born:
        page = born.new_page(width=300, height=80)
        page.insert_text((20, 45), "Warm-up page 1921", fontsize=14)
        pix = page.get_pixmap(dpi=300, colorspace=pymupdf.csGRAY)
    with pymupdf.open() as doc:
        page = doc.new_page(width=300, height=80)
        page.insert_image(page.rect, stream=pix.tobytes("png"))
        doc.save(path)


class _Daemon:
    """The scanhopper daemon on its built-in defaults, folders under ``home``; ``code``, a
    folder holding another ``daemon`` package to run instead of this one."""

    def __init__(self, home: Path, warmup: Path, code: Path | None = None) -> None:
        self.home = home
        self.worker_mb = 0.0
        """The largest peak RSS (MB) seen so far in any of its OCR workers."""
        self.inbox, self.outbox = home / "inbox", home / "outbox"
        self.state = home / "state"
        self.inbox.mkdir(parents=True)
        folders = {
            "inbox": [str(self.inbox)],
            "outbox": str(self.outbox),
            "archive": str(home / "archive"),
            "failed": str(home / "failed"),
            "state": str(self.state),
        }
        config_file = home / "scanhopper.toml"
        # JSON strings and arrays of plain paths are TOML too.
        config_file.write_text(
            "[folders]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in folders.items())
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCANHOPPER_")}
        self.log_path = home / "daemon.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daemon", "-c", str(config_file), "run"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=code,  # sys.path[0]: its daemon package, not this one
        )
        try:
            wait_for(lambda: self._alive() and "daemon_ready" in self._log_text(), 600, "ready")
            error = self.publish(warmup, "warmup", timeout=600)[1]
            if error:
                raise RuntimeError(f"warm-up page: {error}")
        except BaseException:
            self.stop()
            raise

    def _alive(self) -> bool:
        """True, or ``RuntimeError`` when the daemon has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(f"daemon exited with {self.process.returncode}: {self.log_path}")
        return True

    def publish(self, pdf: Path, name: str, *, timeout: float) -> tuple[float, str | None]:
        """Drop ``pdf`` into the inbox as ``<name>.pdf``; seconds to the published PDF,
        and an error when the document did not end ``done``."""
        part = self.inbox / f".{name}.pdf.part"  # ignored until renamed
        shutil.copyfile(pdf, part)
        published = self.outbox / f"{name}.pdf"
        sampled = 0.0

        def is_published() -> bool:
            nonlocal sampled
            self._alive()
            if time.monotonic() - sampled >= 0.2:  # a worker recycled meanwhile counts too
                self.sample_workers()
                sampled = time.monotonic()
            return published.exists()

        started = time.perf_counter()
        part.rename(self.inbox / f"{name}.pdf")
        wait_for(is_published, timeout, f"{name} published")
        seconds = time.perf_counter() - started
        row = None

        def is_recorded() -> bool:  # the PDF is published first, then recorded done
            nonlocal row
            with sqlite3.connect(f"file:{self.state / 'state.db'}?mode=ro", uri=True) as conn:
                row = conn.execute(
                    "SELECT state, error FROM document_status WHERE path = ?", [f"{name}.pdf"]
                ).fetchone()
            return row is not None and row[0] != "publishing"

        wait_for(is_recorded, 60, f"{name} recorded")
        error = None if row and row[0] == "done" else f"document {row}"
        return seconds, error

    def _log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _fold_peaks(self, pids: Sequence[int]) -> None:
        for pid in pids:
            try:
                self.worker_mb = max(self.worker_mb, peak_rss_mb(pid))
            except OSError:
                pass  # it ended between the listing and the read

    def sample_workers(self) -> None:
        """Fold the peak RSS of the daemon's children (its OCR workers) into
        ``worker_mb``."""
        try:
            self._fold_peaks(children(self.process.pid))
        except OSError:
            pass  # the daemon ended; _alive says so

    def worker_peak_mb(self) -> float:
        """The largest peak RSS (MB) of its OCR workers: those sampled during each
        publish, and those ``worker_ready`` or ``worker_recycled`` named that are still
        alive."""
        pids = []
        for line in self._log_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") in (
                "worker_ready",
                "worker_recycled",
            ):
                pids.append(event.get("pid"))
        self._fold_peaks([pid for pid in pids if isinstance(pid, int)])
        self.sample_workers()
        return self.worker_mb

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _ocrmypdf(pdf: Path, out: Path, language: str, log: Path) -> tuple[float, float, str | None]:
    """Run OCRmyPDF on ``pdf``; seconds, peak RSS of its largest tesseract process (MB)
    and an error when it failed."""
    import psutil

    command = [sys.executable, "-m", "ocrmypdf", "--force-ocr", "-j", str(available_cores())]
    command += ["-l", language, "--output-type", "pdf", str(pdf), str(out)]
    peak = 0.0
    with log.open("a") as stream:
        stream.write(f"$ {' '.join(command)}\n")
        stream.flush()
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT)
        tree = psutil.Process(process.pid)
        while True:
            try:
                process.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                pass
            try:
                found = [p for p in tree.children(recursive=True) if p.name() == "tesseract"]
            except psutil.Error:
                continue
            for child in found:
                try:
                    peak = max(peak, peak_rss_mb(child.pid))
                except OSError:
                    pass  # it ended between the listing and the read
        seconds = time.perf_counter() - started
    error = None if process.returncode == 0 else f"ocrmypdf exited {process.returncode}: {log}"
    return seconds, peak, error


def _page_texts(pdf: Path) -> list[str]:
    with pymupdf.open(pdf) as doc:
        return [page.get_text() for page in doc]


def _normalise(text: str, chinese: bool, *, nfkc: bool = False) -> str:
    """Whitespace runs made one space (Chinese: removed); with ``nfkc`` also Unicode
    NFKC, which folds full-width punctuation (U+FF0C to ``,``) and ligatures."""
    if nfkc:
        text = unicodedata.normalize("NFKC", text)
    return "".join(text.split()) if chinese else " ".join(text.split())


def _error_rates(found: _Set, result: _Result) -> tuple[str, str, str]:
    """CER, CER after NFKC and WER of a tool's output on a ground-truth set, as
    percentages over the set's pages."""
    import jiwer

    if result.error or result.output is None or found.truths is None:
        return "-", "-", "-"
    pages = _page_texts(result.output)
    if len(pages) != len(found.truths):
        return "pages?", "pages?", "pages?"
    rates = []
    for nfkc in (False, True):
        truths = [_normalise(t, found.chinese, nfkc=nfkc) for t in found.truths]
        texts = [_normalise(t, found.chinese, nfkc=nfkc) for t in pages]
        rates.append(f"{100 * jiwer.cer(truths, texts):.2f}%")
    truths = [_normalise(t, found.chinese) for t in found.truths]
    texts = [_normalise(t, found.chinese) for t in pages]
    rates.append("n/a" if found.chinese else f"{100 * jiwer.wer(truths, texts):.2f}%")
    return rates[0], rates[1], rates[2]


def _seconds(value: float | None) -> str:
    return "failed" if value is None else f"{value:.2f}"


def _rate(pages: int, seconds: float | None) -> str:
    return "-" if not seconds else f"{pages / seconds:.3f}"


def _size(result: _Result) -> str:
    if result.error or result.output is None:
        return "-"
    return f"{result.output.stat().st_size / 1000:.0f}"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.rjust(width) for cell, width in zip(row, widths, strict=True)]
        cells[0] = row[0].ljust(widths[0])
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def _ratio(ours: float | None, theirs: float | None) -> str:
    """Pages/s of ``ours`` over pages/s of ``theirs``, from their seconds."""
    return f"{theirs / ours:.2f}" if ours and theirs else "-"


def _report(
    sets: list[_Set],
    tools: list[str],
    results: dict[tuple[str, str], _Result],
    peak_mb: dict[str, float],
) -> None:
    ratios = [(SCANHOPPER, other) for other in tools if other != SCANHOPPER]
    speed = [
        [
            "set",
            "pages",
            *(f"{t} s" for t in tools),
            *(f"{t} p/s" for t in tools),
            *(f"{ours}/{theirs}" for ours, theirs in ratios),
            *(f"{t} kB" for t in tools),
        ]
    ]
    total_pages, total = 0, dict.fromkeys(tools, 0.0)
    complete = True
    for s in sets:
        medians = {t: results[s.name, t].median for t in tools}
        speed.append(
            [
                s.name,
                str(s.pages),
                *(_seconds(medians[t]) for t in tools),
                *(_rate(s.pages, medians[t]) for t in tools),
                *(_ratio(medians[ours], medians[theirs]) for ours, theirs in ratios),
                *(_size(results[s.name, t]) for t in tools),
            ]
        )
        total_pages += s.pages
        complete = complete and all(m is not None for m in medians.values())
        for t in tools:
            total[t] += medians[t] or 0.0
    if len(sets) > 1:
        speed.append(
            [
                "total" if complete else "total (failed sets left out)",
                str(total_pages),
                *(f"{total[t]:.2f}" for t in tools),
                *(_rate(total_pages, total[t]) for t in tools),
                *(_ratio(total[ours], total[theirs]) for ours, theirs in ratios),
                *("" for _ in tools),
            ]
        )
    print(_table(speed))
    truth_sets = [s for s in sets if s.truths is not None]
    if truth_sets:
        accuracy = [["set", *(f"{t} {m}" for t in tools for m in ("CER", "CER NFKC", "WER"))]]
        for s in truth_sets:
            rates = [x for t in tools for x in _error_rates(s, results[s.name, t])]
            accuracy.append([s.name, *rates])
        print()
        print(_table(accuracy))
    print()
    for t in tools:
        what = "largest tesseract process" if t == TESSERACT else "largest OCR worker"
        print(f"peak RSS, {t}: {peak_mb[t]:.0f} MB ({what})")
    for s in sets:
        for t in tools:
            if results[s.name, t].error:
                print(f"{s.name}, {t}: {results[s.name, t].error}")


def _extract_code(revision: str, into: Path) -> Path:
    """The ``daemon`` package of git revision ``revision`` of this repository, written
    under ``into`` (``git archive``); returns ``into``.

    Raises:
        subprocess.CalledProcessError: git does not know the revision.
    """
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "daemon"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        check=True,
    ).stdout
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def _print_settings(tool: str, code: Path | None) -> None:
    """One header line: what ``tool``'s defaults resolve to, read by its own code."""
    resolved = subprocess.run(
        [sys.executable, "-c", _RESOLVED], cwd=code, capture_output=True, check=True
    ).stdout
    version, devices, threads, engine, side, limit, stable = json.loads(resolved)
    print(
        f"{tool} ({version}, its defaults): "
        f"workers {devices} x {threads} threads, engine {engine}, det_limit_side_len "
        f"{side} ({limit}), intake.stable_seconds {stable:g} (inside each of its timings)"
    )


def run(args: Sequence[str] | None = None) -> ExitCode:
    """Parse the command line, run the benchmark and print the tables.

    Args:
        args: Command-line arguments; ``None`` reads ``sys.argv``.

    Returns:
        ``ok``, ``failed`` when a tool failed on a set, or ``missing_tools``.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs per tool and set")
    parser.add_argument(
        "--sets", default="groundtruth,corpus", help="comma-separated: groundtruth, corpus"
    )
    parser.add_argument(
        "--quick", action="store_true", help="one round on one ground-truth set (smoke test)"
    )
    parser.add_argument(
        "--before",
        nargs="?",
        const=BEFORE_ISSUE_9,
        metavar="REV",
        help="also run scanhopper@REV: the code of git revision REV (default "
        f"{BEFORE_ISSUE_9}, before issue 9) on its own defaults",
    )
    options = parser.parse_args(args)
    names = [n.strip() for n in options.sets.split(",") if n.strip()]
    if options.quick:
        names, options.rounds = ["groundtruth"], 1
    if unknown := set(names) - {"groundtruth", "corpus"}:
        parser.error(f"unknown sets: {', '.join(sorted(unknown))}")
    if options.rounds < 1:
        parser.error("--rounds must be at least 1")

    work = Path(tempfile.mkdtemp(prefix="scanhopper-bench-peers-"))
    sets = _make_sets(names, work, options.quick)
    if missing := _missing_tools({s.tesseract for s in sets}):
        print("bench.peers needs tools that are not installed. Install them with:")
        for command in missing:
            print(f"  {command}")
        return ExitCode.missing_tools

    import ocrmypdf

    codes: dict[str, Path | None] = {SCANHOPPER: None}
    if options.before:
        codes[f"scanhopper@{options.before}"] = _extract_code(options.before, work / "before")
    tools = [SCANHOPPER, TESSERACT, *list(codes)[1:]]
    for tool, code in codes.items():
        _print_settings(tool, code)
    tesseract_version = subprocess.run(
        ["tesseract", "--version"], capture_output=True, text=True, check=False
    ).stdout.split("\n", 1)[0]
    cores = available_cores()
    print(
        f"{TESSERACT}: ocrmypdf {ocrmypdf.__version__} with "
        f"{tesseract_version}: --force-ocr -j {cores} --output-type pdf"
    )
    print(f"{cores} usable cores; median of {options.rounds} round(s); work files in {work}")
    print()

    warmup = work / "warmup.pdf"
    _make_warmup(warmup)
    tesseract_log = work / "ocrmypdf.log"
    for language in sorted({s.tesseract for s in sets}):
        _ocrmypdf(warmup, work / f"warmup-{language}.pdf", language, tesseract_log)

    results = {(s.name, t): _Result() for s in sets for t in tools}
    peak_mb = dict.fromkeys(tools, 0.0)
    for round_ in range(options.rounds):
        home = work / f"round-{round_ + 1}"
        daemons: dict[str, _Daemon] = {}
        try:
            for tool, code in codes.items():
                daemons[tool] = _Daemon(home / tool, warmup, code)
            for index, s in enumerate(sets):
                for tool in tools[:: -1 if (index + round_) % 2 else 1]:
                    result = results[s.name, tool]
                    if result.error:
                        continue
                    if tool in daemons:
                        daemon = daemons[tool]
                        seconds, error = daemon.publish(s.pdf, s.name, timeout=300 + 300 * s.pages)
                        output = daemon.outbox / f"{s.name}.pdf"
                    else:
                        output = home / tool / f"{s.name}.pdf"
                        output.parent.mkdir(parents=True, exist_ok=True)
                        seconds, peak, error = _ocrmypdf(s.pdf, output, s.tesseract, tesseract_log)
                        peak_mb[tool] = max(peak_mb[tool], peak)
                    result.seconds.append(seconds)
                    result.output, result.error = output, error
            for tool, daemon in daemons.items():
                peak_mb[tool] = max(peak_mb[tool], daemon.worker_peak_mb())
        finally:
            for daemon in daemons.values():
                daemon.stop()

    _report(sets, tools, results, peak_mb)
    failed = any(r.error for r in results.values())
    return ExitCode.failed if failed else ExitCode.ok


def main() -> None:
    """Entry point: ``sys.exit(run())``."""
    sys.exit(run())


if __name__ == "__main__":
    main()
