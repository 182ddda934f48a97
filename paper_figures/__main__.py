"""``python -m paper_figures [--runs DIR] [--quick] [--out DIR] ...``: the same as ``dyntheory
figures`` (see :mod:`dyntheory.figures_cli`)."""

import sys

from dyntheory.figures_cli import main

if __name__ == "__main__":
    sys.exit(main())
