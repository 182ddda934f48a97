"""A one-line progress bar with ETA and the latest loss / accuracy (plain text, no dependencies).

Shown on stderr only when it is a terminal and ``CI`` is unset, and only once the run has lasted
``delay`` seconds (short runs stay quiet). Redraws at most every ``interval`` seconds.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping


def enabled(stream=None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("CI")


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """``update(step, metrics)`` after each dispatch; ``close()`` at the end."""

    def __init__(
        self,
        total: int,
        start: int = 0,
        show: bool | None = None,
        stream=None,
        delay: float = 3.0,
        interval: float = 0.2,
        width: int = 24,
    ):
        self.total, self.start, self.stream = total, start, stream or sys.stderr
        self.show = enabled(self.stream) if show is None else show
        self.delay, self.interval, self.width = delay, interval, width
        self.t0 = time.perf_counter()
        self._last_draw = 0.0
        self._drawn = False

    def line(self, step: int, metrics: Mapping[str, float], elapsed: float) -> str:
        done = max(step - self.start, 0)
        frac = step / self.total if self.total else 1.0
        filled = int(self.width * min(frac, 1.0))
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        parts = [
            f"[{'#' * filled}{'.' * (self.width - filled)}] {step}/{self.total}",
            f"{rate:.1f} step/s",
            f"ETA {_fmt_time(eta)}" if eta == eta else "ETA --:--",
        ]
        for key, label in (
            ("train/loss", "loss"),
            ("train/acc", "acc"),
            ("test/loss", "test"),
            ("test/acc", "test acc"),
        ):
            if key in metrics and metrics[key] == metrics[key]:
                parts.append(f"{label} {metrics[key]:.4g}")
        return " | ".join(parts)

    def update(self, step: int, metrics: Mapping[str, float] | None = None) -> None:
        if not self.show:
            return
        now = time.perf_counter()
        elapsed = now - self.t0
        if elapsed < self.delay or now - self._last_draw < self.interval:
            return
        self._last_draw = now
        self.stream.write("\r" + self.line(step, metrics or {}, elapsed) + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
