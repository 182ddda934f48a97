"""``python -m paper_figures [--runs DIR] [--quick] [--out DIR] ...``: the same as ``dyntheory
figures`` (see :mod:`dyntheory.cli.figures`)."""

import sys

from dyntheory.cli.figures import main

if __name__ == "__main__":
    sys.exit(main())
