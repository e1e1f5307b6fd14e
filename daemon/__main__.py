"""``python -m daemon`` runs the scanhopper command line."""

from .cli import main

main()
