r"""Probes: theory quantities measured during training, each on its own schedule.

The engine (:mod:`dyntheory.engine`) calls a probe at the steps of its :class:`Schedule`, on the
fixed probe subsets ``ctx.train`` / ``ctx.test`` (dicts with ``"x"``, ``"y"`` and, when the clean
targets are known, ``"y_clean"``), jitted once and vmapped over seeds. Scalars are logged as
``probe/<name>/<key>``; arrays go to ``probes.npz`` as ``<name>/<key>`` with shape ``(T, ...)``
(``(T, S, ...)`` with seeds) next to ``<name>/step``. A probe's state (an accumulator, the initial
kernel) is checkpointed with the run. Kernels are float32 from :mod:`dyntheory.ntk`; spectra and
accumulators are float64 when ``jax_enable_x64`` is on (the CLI turns it on).

- :class:`NTKSpectrum` (``ntk``): λ_max, λ_min, trace, effective ranks, condition number,
  kernel-target alignment, 2n/λ_max, ``drift`` = ‖K_t − K_0‖_F/‖K_0‖_F (arrays:
  ``eigenvalues``, top-k);
- :class:`Dissipation` (``dissipation``): W_S spectrum summaries, channel dimension, the loss
  identity Φ(0) − Φ(t) vs g(0)ᵀ W g(0), channel/reservoir energies of g(0), g(t) and the label
  noise, coupling A = G_Q D† check, test invisibility, four cells (arrays: ``w_eigenvalues``,
  test displacements);
- :class:`GateStats` (``gate``): PRM ``gate_mean``, ``gate_open_fraction``;
- :class:`PopulationRisk` (``poprisk``): LOO ‖∇R‖² estimate, predicted risk change (per step and
  summed over the run), hard-gate open fraction;
- :class:`Norms` (``norms``): ``grad/<layer path>``, ``param/<layer path>``, global norms;
- :class:`DriftDiffusion` (``drift``): accumulated drift and noise norms on the top / bottom NTK
  directions.

An in-scan probe (:class:`InScanProbe`) also advances inside the fused training scan after every
step: :class:`StepwiseDissipation` (``stepwise``) is the loss identity of ``W_S`` with the
propagator advanced at every step by that step's own linearized map (the reference integrator of
THEORY.md §10), with the propagated-to-realized residual ratio and the Ritz spectrum of ``W_S``.

Modules: :mod:`~dyntheory.probes.base` (the protocol), :mod:`~dyntheory.probes.kernel`,
:mod:`~dyntheory.probes.dissipation` (with ``dissipation_state``, ``dissipation_refresh``,
``dissipation_report``, ``dissipation_kernels``), :mod:`~dyntheory.probes.stats`; reading a
run's history (seed columns, the population-risk check, stopping rules):
:mod:`~dyntheory.probes.history`.
Preconditioners (the diagonal step of an adaptive optimizer) come from
:mod:`dyntheory.optim.state`.

Writing a probe: subclass :class:`Probe` (a frozen dataclass with ``schedule`` and ``name``) and
implement ``init(ctx, params, opt_state) -> state`` and ``__call__(ctx, state, params, opt_state,
step) -> (state, scalars, arrays)``, pure and jit-able; ``step`` is a traced int32.

Example::

    from dyntheory.optim.state import adam_preconditioner
    from dyntheory.probes import Dissipation, NTKSpectrum, Norms, Schedule
    probes = [NTKSpectrum(Schedule.log(4), top_k=16),
              Dissipation(Schedule.every(10), preconditioner=adam_preconditioner(1e-3)),
              Norms(Schedule.every(100))]
"""

from dyntheory.probes.base import (
    InScanProbe,
    Probe,
    ProbeContext,
    Schedule,
    batch_grads,
    path_name,
)
from dyntheory.probes.dissipation import Dissipation, DissipationProbeState
from dyntheory.probes.history import (
    last_finite,
    last_value,
    loo_stopping_step,
    population_risk_check,
    ratio,
    seed_columns,
    stopping_rules,
    value_at,
    ws_stopping_step,
)
from dyntheory.probes.kernel import NTKSpectrum
from dyntheory.probes.stats import DriftDiffusion, GateStats, Norms, PopulationRisk
from dyntheory.probes.stepwise import StepwiseDissipation, StepwiseState
from dyntheory.probes.stopping import stopping_probes


def default_probes(probe_every: int = 500, norms_every: int = 100) -> list[Probe]:
    """The engine's default probe set: NTK spectrum + drift and per-layer norms."""
    return [NTKSpectrum(Schedule.every(probe_every)), Norms(Schedule.every(norms_every))]


__all__ = [
    "Dissipation",
    "DissipationProbeState",
    "DriftDiffusion",
    "GateStats",
    "InScanProbe",
    "NTKSpectrum",
    "Norms",
    "PopulationRisk",
    "Probe",
    "ProbeContext",
    "Schedule",
    "StepwiseDissipation",
    "StepwiseState",
    "batch_grads",
    "default_probes",
    "last_finite",
    "last_value",
    "loo_stopping_step",
    "path_name",
    "population_risk_check",
    "ratio",
    "seed_columns",
    "stopping_probes",
    "stopping_rules",
    "value_at",
    "ws_stopping_step",
]
