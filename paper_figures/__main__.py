"""``python -m paper_figures [--runs DIR] [--preset NAME] [--out DIR] ...``: the same as
``dyntheory figures`` (see :mod:`dyntheory.cli.figures`)."""

import sys

from dyntheory.cli.app import main

if __name__ == "__main__":
    sys.exit(main(["figures", *sys.argv[1:]]))
