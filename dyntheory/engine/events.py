"""Optional TensorBoard event files next to ``metrics.jsonl`` (``TrainConfig.tensorboard=True``).

``metrics.jsonl`` stays the record of a run; the event files under ``RUN_DIR/events/`` are a view
of the same lines for TensorBoard, written by ``tensorboardX`` (``pip install -e .[tensorboard]``).
Every numeric field of a metrics line becomes a scalar with the line's step; with several seeds
the tag gets a ``/seed<s>`` suffix. A resumed run appends to the same directory; TensorBoard shows
the recomputed steps after the checkpoint over the old ones.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

EVENTS = "events"


class EventWriter:
    """Writes metrics lines as TensorBoard scalars into ``directory``."""

    def __init__(self, directory: str | os.PathLike):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ValueError(
                "tensorboard=True needs the tensorboardX package: pip install -e '.[tensorboard]'"
                " (or set tensorboard=false)."
            ) from None
        self._writer = SummaryWriter(logdir=str(directory))

    def write(self, lines: Iterable[Mapping[str, Any]]) -> None:
        for line in lines:
            step = int(line["step"])
            suffix = f"/seed{line['seed']}" if "seed" in line else ""
            for key, value in line.items():
                if key in ("step", "seed") or isinstance(value, bool):
                    continue
                if isinstance(value, int | float) and math.isfinite(value):
                    self._writer.add_scalar(key + suffix, value, step)

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()
