"""scanhopper: watched folders of scanned pages in, searchable PDFs out."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
