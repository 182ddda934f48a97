"""The run's progress bar: steps, rate, ETA and the latest loss / accuracy, drawn by ``rich``.

Shown on stderr only when it is a terminal and ``CI`` is unset, and only once the run has lasted
``delay`` seconds (short runs stay quiet). Redraws at most every ``interval`` seconds.

Before the first step, :meth:`Progress.compiling` says the run is compiling: on a terminal a live
status line with a spinner and the time spent (erased when done), elsewhere (a log file) one line,
``compiling… done in 12.3 s``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Mapping

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

SHOWN = (
    ("train/loss", "loss"),
    ("train/acc", "acc"),
    ("test/loss", "test"),
    ("test/acc", "test acc"),
)


def enabled(stream=None) -> bool:
    """Whether to draw on ``stream`` (default stderr): a terminal, and ``CI`` unset."""
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("CI")


def describe(metrics: Mapping[str, float]) -> str:
    """``loss 0.125 | test acc 0.5``: the finite values among :data:`SHOWN`."""
    parts = [
        f"{label} {metrics[key]:.4g}"
        for key, label in SHOWN
        if key in metrics and metrics[key] == metrics[key]
    ]
    return " | ".join(parts)


class Progress:
    """``with compiling(): ...`` around compilation; ``update(step, metrics)`` after each
    dispatch; ``close()`` at the end.

    ``show``: None draws on terminals only (and says ``compiling…`` in one line elsewhere); False
    draws nothing; True draws the bar whatever the stream.
    """

    def __init__(
        self,
        total: int,
        start: int = 0,
        show: bool | None = None,
        stream=None,
        delay: float = 3.0,
        interval: float = 0.2,
    ):
        self.total, self.start, self.stream = total, start, stream or sys.stderr
        self.terminal = enabled(self.stream)
        self.quiet = show is False
        self.show = self.terminal if show is None else show
        self.delay, self.interval = delay, interval
        self.t0 = time.perf_counter()
        self._last_draw = -float("inf")
        self._bar: RichProgress | None = None
        self._task = None

    @contextlib.contextmanager
    def compiling(self, what: str = "compiling") -> Iterator[None]:
        """Say ``what…`` while the body runs: a live status on a terminal (with the time so far,
        gone when done), one line ``what… done in 12.3 s`` elsewhere."""
        try:
            yield from self._say(what)
        finally:
            self.t0 = time.perf_counter()  # the rate and the delay count from the first step

    def _say(self, what: str) -> Iterator[None]:
        if self.quiet:
            yield
            return
        t0 = time.perf_counter()
        if self.terminal:
            console = Console(file=self.stream, force_terminal=True, highlight=False)
            status = RichProgress(
                SpinnerColumn(),
                TextColumn(f"{what}…"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            with status:
                status.add_task(what, total=None)
                yield
            return
        self.stream.write(f"{what}… ")
        self.stream.flush()
        try:
            yield
        except BaseException:
            self.stream.write(f"stopped after {time.perf_counter() - t0:.1f} s\n")
            raise
        else:
            self.stream.write(f"done in {time.perf_counter() - t0:.1f} s\n")
        finally:
            self.stream.flush()

    def _open(self) -> None:
        console = Console(file=self.stream, force_terminal=True, width=120, highlight=False)
        self._bar = RichProgress(
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=console,
            auto_refresh=False,
        )
        self._task = self._bar.add_task(
            "train", total=self.total, completed=self.start, rate="", metrics=""
        )
        self._bar.start()

    def update(self, step: int, metrics: Mapping[str, float] | None = None) -> None:
        if not self.show:
            return
        now = time.perf_counter()
        elapsed = now - self.t0
        if elapsed < self.delay or now - self._last_draw < self.interval:
            return
        self._last_draw = now
        if self._bar is None:
            self._open()
        rate = max(step - self.start, 0) / elapsed if elapsed > 0 else 0.0
        self._bar.update(
            self._task,
            completed=step,
            rate=f"{rate:.1f} step/s",
            metrics=describe(metrics or {}),
        )
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
