"""The probes of the training-set-only stopping rules (:func:`dyntheory.probes.stopping_rules`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dyntheory.probes.base import Probe, Schedule
from dyntheory.probes.dissipation import Dissipation
from dyntheory.probes.stats import PopulationRisk


def stopping_probes(step: Mapping[str, Any], every: int, start: int = 10) -> list[Probe]:
    """For a squared-loss run whose probe set is the whole training set: the LOO
    :class:`PopulationRisk` every step, and a dense :class:`Dissipation` every ``every`` steps
    from ``start`` on (the W_S split at half the loss dissipated, with the augmented identity of
    the step as taken as its validity check, THEORY.md §10).

    ``step`` is the optimizer's model of its step,
    :meth:`dyntheory.optim.config.OptimizerConfig.step_model` (``preconditioner``, ``momentum``,
    ``first_moment``, ``decay``).
    """
    return [
        PopulationRisk(Schedule.every(1), preconditioner=step["preconditioner"]),
        Dissipation(
            Schedule.every(every),
            **step,
            loss="squared",
            query=False,
            threshold=0.5,
            mode="dissipated_fraction",
            start=start,
        ),
    ]
