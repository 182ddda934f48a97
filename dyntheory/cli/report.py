"""``dyntheory report``: a results block for a results page, made from a run directory.

    dyntheory report RUN_DIR [--write docs/results/PAGE.md] [--name NAME]

The block holds the command that reproduces the run (from ``config.json``: experiment, preset,
overrides) and every number of ``results.json`` as a table (nested keys joined by ``/``, per-seed
lists joined by `` / ``). Printed, or with ``--write`` put into a Markdown page between the markers
``<!-- results: NAME -->`` and ``<!-- /results: NAME -->``: the block of the same name is
replaced, a new one is appended, and a missing page is created. So the numbers of a results page
are regenerated from runs, never retyped; the prose around a block (the verdict) is left alone.
It only reads the run directory.
"""

from __future__ import annotations

import argparse
import math
import shlex
from pathlib import Path
from typing import Any

MAX_LIST = 12  # longer lists are summarized by their length


class ReportError(ValueError):
    """A run directory without the files a report needs (exit status 2, one line)."""


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value).lower()
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.5g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def flatten(results: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``(key, value)`` rows of a results tree: dicts by ``/``, lists of scalars in one cell."""
    if isinstance(results, dict):
        rows = []
        for key, value in results.items():
            rows += flatten(value, f"{prefix}/{key}" if prefix else str(key))
        return rows
    if isinstance(results, list | tuple):
        if all(not isinstance(v, dict | list | tuple) for v in results):
            if len(results) > MAX_LIST:
                return [(prefix, f"({len(results)} values)")]
            return [(prefix, " / ".join(_fmt(v) for v in results))]
        rows = []
        for i, value in enumerate(results):
            rows += flatten(value, f"{prefix}/{i}")
        return rows
    return [(prefix, _fmt(results))]


def command(config: dict, path: Path) -> str:
    """The ``dyntheory run`` command that reproduces the run recorded in ``config``."""
    experiment = str(config["experiment"])
    if Path(experiment).is_absolute():  # a file experiment: relative to here when inside
        try:
            experiment = str(Path(experiment).relative_to(Path.cwd()))
        except ValueError:
            pass
    words = ["dyntheory", "run", experiment, "--preset", str(config["preset"])]
    for override in config.get("overrides", []):
        words += ["--set", override]
    return shlex.join(words + ["--out", str(path)])


def render(run_dir: str | Path, name: str | None = None) -> str:
    from dyntheory.engine import rundir  # loads JAX: not when the parser is built

    """The Markdown results block of ``run_dir``."""
    path = Path(run_dir)
    try:
        config = rundir.read_json(path / rundir.CONFIG)
        results = rundir.read_json(path / rundir.RESULTS)
    except FileNotFoundError as e:
        raise ReportError(
            f"{e.filename} does not exist: a report needs a finished `dyntheory run` directory"
        ) from None
    name = name or path.name
    rows = flatten(results)
    lines = [
        f"<!-- results: {name} -->",
        f"Run `{name}` (experiment `{Path(str(config['experiment'])).stem}`, "
        f"preset `{config['preset']}`), made by `dyntheory report` from its `results.json`:",
        "",
        "```bash",
        command(config, path),
        "```",
        "",
        "| result | value |",
        "|---|---|",
        *(f"| `{key}` | {value} |" for key, value in rows),
        f"<!-- /results: {name} -->",
    ]
    return "\n".join(lines) + "\n"


def write(page: str | Path, block: str, name: str) -> Path:
    """Put ``block`` into ``page`` in place of the block called ``name`` (or append it)."""
    from dyntheory.engine import rundir

    page = Path(page)
    start, end = f"<!-- results: {name} -->", f"<!-- /results: {name} -->"
    text = page.read_text() if page.exists() else f"# {page.stem.replace('_', ' ')}\n"
    if start in text and end in text:
        a, b = text.index(start), text.index(end) + len(end)
        text = text[:a] + block.rstrip("\n") + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    page.parent.mkdir(parents=True, exist_ok=True)
    rundir.write_bytes(page, text.encode())
    return page


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `dyntheory run`")
    p.add_argument("--write", metavar="PAGE", help="put the block into this Markdown page")
    p.add_argument("--name", help="the block's name (default: the run directory's name)")


def handler(args: argparse.Namespace) -> int:
    name = args.name or Path(args.run_dir).name
    block = render(args.run_dir, name)
    if args.write:
        print(f"results block {name!r} written to {write(args.write, block, name)}")
    else:
        print(block, end="")
    return 0
