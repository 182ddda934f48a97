r"""The classification task: an MLP trained by the engine, swept over width ``N`` and data ``D``.

Inputs ``x ∈ R^d`` Gaussian with power-law covariance ``λ_k = k^{−a}``; ``C`` classes labelled by a
linear teacher, ``y = argmax_c (W*ᵀx)_c`` with the columns of ``W*`` carrying power ``∝ k^{−b}``
per input eigen-direction (noiseless). A one-hidden-layer ReLU MLP of width ``N`` is trained on
``D`` examples with softmax cross-entropy, full-batch Adam for ``steps`` steps, all seeds at once
(vmap). The loss of a run is the test cross-entropy at its best eval step (early stopping: with
full-batch training on a small ``D`` the final cross-entropy grows again as the net becomes
over-confident), averaged over seeds; the final loss is reported too.

The NTK spectrum is measured by :class:`dyntheory.probes.NTKSpectrum` at step 0 and at the end of
every run (top eigenvalues of the probe set's kernel); its decay exponent
(:func:`dyntheory.spectrum.power_law_exponent`) is set beside the fitted exponents, together with
the spectral prediction of the data exponent from the init NTK of the widest model and the labels
(:func:`experiments.scaling_laws.teacher.gram_exponents`).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dyntheory import ntk, probes, spectrum
from dyntheory.engine import fit
from dyntheory.engine.rundir import subrun_dir
from dyntheory.models import MLP, count_params, functional
from experiments.scaling_laws.teacher import gram_exponents


def make_data(cfg, D: int) -> tuple[dict, dict]:
    """Train set of the first ``D`` examples (nested across ``D``) and the test set."""
    c = cfg.cls
    kv, ka, kx, kq = jax.random.split(jax.random.key(c.data_seed), 4)
    k = jnp.arange(1, c.d_in + 1, dtype=jnp.float32)
    scale = k ** (-c.a / 2)
    x = jax.random.normal(kx, (max(c.data_sizes), c.d_in), jnp.float32) * scale[None, :]
    xq = jax.random.normal(kq, (c.n_test, c.d_in), jnp.float32) * scale[None, :]
    # standardize the inputs (the covariance's shape is kept; its overall scale is not)
    norm = float(jnp.sqrt(jnp.sum(scale**2) / c.d_in))
    x, xq = x / norm, xq / norm
    # teacher: a random ReLU network whose j-th unit carries output weight ∝ j^(−b/2)
    v = jax.random.normal(kv, (c.d_in, c.teacher_width), jnp.float32) / jnp.sqrt(c.d_in)
    j = jnp.arange(1, c.teacher_width + 1, dtype=jnp.float32)
    a = (
        jax.random.normal(ka, (c.teacher_width, c.classes), jnp.float32)
        * (j ** (-c.b / 2))[:, None]
    )
    center = jnp.mean(jax.nn.relu(xq @ v), axis=0)  # remove the units' means: no class dominates
    label = lambda z: jnp.argmax((jax.nn.relu(z @ v) - center[None, :]) @ a, axis=1)
    train = {"x": np.asarray(x[:D]), "y": np.asarray(label(x[:D]).astype(jnp.int32))}
    test = {"x": np.asarray(xq), "y": np.asarray(label(xq).astype(jnp.int32))}
    return train, test


def _model(cfg, width: int):
    c = cfg.cls
    build = lambda key: MLP(c.d_in, (width,), c.classes, activation="relu", rngs=nnx.Rngs(key))
    apply_fn, params0 = functional(build(jax.random.key(0)))
    return apply_fn, (lambda key: functional(build(key))[1]), params0


def run_one(cfg, width: int, D: int, run_dir) -> dict:
    """One (width, D) run over ``cfg.train.seeds`` seeds."""
    t0 = time.perf_counter()
    c = cfg.cls
    train, test = make_data(cfg, D)
    apply_fn, init_params, params0 = _model(cfg, width)
    probe = probes.NTKSpectrum(
        probes.Schedule.at(0, cfg.train.steps), top_k=c.ntk_top_k, drift=False
    )
    res = fit(
        cfg.train,
        apply_fn=apply_fn,
        init_params=init_params,
        optimizer=optax.adam(c.lr),
        data=train,
        loss="softmax_ce",
        eval_sets={"test": test},
        probes=[probe],
        run_dir=subrun_dir(
            run_dir,
            {"width": width, "D": D},
            config=cfg,
        ),
    )
    h = res.history
    loss = probes.seed_columns(h["test/loss"])
    ok = np.all(np.isfinite(loss), axis=1)
    steps, loss = h["step"][ok], loss[ok]
    eig = np.asarray(res.arrays["ntk/eigenvalues"], float)  # (T, [S,] k)
    eig = eig if eig.ndim == 3 else eig[:, None, :]
    hi = max(3, min(c.ntk_fit_hi, eig.shape[-1]))
    exps = [
        [spectrum.power_law_exponent(e[s], c.ntk_fit_lo, hi) for s in range(e.shape[0])]
        for e in eig
    ]
    return {
        "width": width,
        "D": D,
        "n_params": count_params(params0),
        "best_test_loss": loss.min(axis=0).tolist(),
        "final_test_loss": loss[-1].tolist(),
        "final_test_acc": probes.seed_columns(h["test/acc"])[ok][-1].tolist(),
        "curve_step": steps.astype(int).tolist(),
        "curve_test_loss": loss.mean(axis=1).tolist(),
        "ntk_exponent_init": float(np.mean(exps[0])),
        "ntk_exponent_final": float(np.mean(exps[-1])),
        "wall_s": time.perf_counter() - t0,
    }


def spectral_prediction(cfg) -> dict:
    """Exponents of the widest model's init NTK (traced over outputs) and the centred labels."""
    c = cfg.cls
    train, _ = make_data(cfg, min(c.spectral_n, max(c.data_sizes)))
    apply_fn, _, params = _model(cfg, max(c.widths))
    k = ntk.empirical_ntk(apply_fn, params, jnp.asarray(train["x"]), trace=True)
    y = np.eye(c.classes)[train["y"]]
    y = y - y.mean(axis=0)
    return gram_exponents(np.asarray(k), y, c.ntk_fit_lo, 0.25)


def sweep(cfg, out) -> dict:
    """Every (width, D) run: the loss grid ``(|N|, |D|, S)`` and the per-run blocks."""
    c = cfg.cls
    runs = {}
    best = np.zeros((len(c.widths), len(c.data_sizes), cfg.train.seeds))
    final = np.zeros_like(best)
    for i, w in enumerate(c.widths):
        for j, D in enumerate(c.data_sizes):
            r = run_one(cfg, w, D, out.file(f"cls/w{w}_D{D}"))
            runs[f"w{w}_D{D}"] = r
            best[i, j], final[i, j] = r["best_test_loss"], r["final_test_loss"]
    return {"runs": runs, "best": best, "final": final}
