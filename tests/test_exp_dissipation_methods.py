"""Every experiment with a W_S probe takes ``dissipation_method`` / ``dissipation_rank``, and a
complete low-rank basis gives the dense run's numbers."""

from __future__ import annotations

import numpy as np
import pytest

from dyntheory.cli.experiments import resolve_config, run_experiment
from dyntheory.engine import rundir
from dyntheory.engine.config import ConfigError
from experiments import double_descent, dynamics, toy_regression

pytestmark = pytest.mark.one_device  # their runs on one device (tests/conftest.py)

# the row-wise checks that only one method reports
LOWRANK_ONLY = ("basis_size", "g0_tracked")


@pytest.mark.parametrize(
    ("module", "preset", "outputs"),
    [(toy_regression, "tiny", 16), (dynamics, "tiny", 16), (double_descent, "tiny", 16)],
)
def test_every_w_s_experiment_takes_the_method_and_checks_the_rank(module, preset, outputs):
    sets = ["dissipation_method=lowrank", f"dissipation_rank={outputs}"]
    _, cfg = resolve_config(module, preset, sets)
    assert cfg.dissipation_method == "lowrank" and cfg.dissipation_rank == outputs
    with pytest.raises(ConfigError, match="dissipation_rank .* must be <= the"):
        resolve_config(module, preset, ["dissipation_method=lowrank", "dissipation_rank=999"])
    with pytest.raises(ConfigError, match="dissipation_method"):
        resolve_config(module, preset, ["dissipation_method=sparse"])


def test_toy_regression_lowrank_with_a_complete_basis_equals_dense(tmp_path):
    """``--set dissipation_method=lowrank --set dissipation_rank=n·p`` on the tiny preset: every
    W_S scalar of every probe step equals the dense run's to 1e-4 (the quick preset's numbers,
    rank 64, are in docs/results/ws-checks.md)."""
    sets = ["dissipation_method=lowrank", "dissipation_rank=16", "dissipation_vectors=16"]
    dense_dir, dense = run_experiment("toy_regression", "tiny", out=tmp_path / "dense")
    low_dir, low = run_experiment("toy_regression", "tiny", sets, out=tmp_path / "low")
    hd, hl = rundir.load_metrics(dense_dir.path), rundir.load_metrics(low_dir.path)
    keys = [k for k in hd if k.startswith("probe/dissipation/")]
    assert len(keys) > 20 and all(k in hl for k in keys)
    for key in keys:
        a, b = np.asarray(hl[key], float), np.asarray(hd[key], float)
        scale = np.nanmax(np.abs(b)) if np.isfinite(b).any() else 1.0
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * scale, err_msg=key)
    for key in ("w_effective_rank", "channel_dim", "coupling_corr", "noise_reservoir_fraction"):
        np.testing.assert_allclose(low[key], dense[key], rtol=1e-4, err_msg=key)
    assert np.nanmax(hl["probe/dissipation/basis_size"]) == 16
