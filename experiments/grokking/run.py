"""Train AdamW and PRM on the same modular-arithmetic split and seeds; write the results.

Run directory (``out_dir``)::

    config.json            the resolved config (written here if the caller has not)
    adamw/, prm/           one engine sub-run per optimizer (:func:`dyntheory.engine.rundir.
                           subrun_dir`, resumed while its spec is unchanged): metrics.jsonl
                           (every seed, "trainset/acc" = accuracy on the whole train split,
                           "test/acc"), probes.npz (NTK eigenvalues, W_S eigenvalues)
    results.json           steps to the train / test targets per seed and median, their ratio

The figure is ``paper_figures/grokking.py`` (``dyntheory figures --only grokking``).
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dyntheory import probes, split
from dyntheory.engine import rundir, sharding, sweep
from dyntheory.engine.config import to_dict
from dyntheory.models import EmbedMLP, Transformer, abstract, count_params, functional
from dyntheory.optim import finite_dataset_alpha
from dyntheory.optim.config import OptimizerConfig
from dyntheory.probes import ratio, stepwise_path
from experiments.grokking.config import Config
from experiments.grokking.data import ModularData, make_data


def load_data(cfg: Config) -> ModularData:
    fmt = "pair" if cfg.model == "mlp" else "sequence"
    return make_data(cfg.p, cfg.op, cfg.train_fraction, cfg.split_seed, fmt, cfg.b_nonzero)


# Grokfast's reference decoder (github.com/ironjr/grokfast, main.py): torch.nn.Embedding's N(0, 1)
# init, `x = ln_1(x); x = x + attn(x)` blocks, `nn.Linear(dim, num_tokens, bias=False)` head
GROKFAST_DECODER = dict(embed_std=1.0, residual="normed", readout_bias=False)


def build_model(cfg: Config, data: ModularData, key: jax.Array) -> nnx.Module:
    rngs = nnx.Rngs(key)
    if cfg.model == "mlp":
        return EmbedMLP(
            data.vocab_size, cfg.p, n_tokens=2, embed_dim=cfg.width, hidden=(cfg.hidden,), rngs=rngs
        )
    return Transformer(
        data.vocab_size,
        data.x_train.shape[1],
        cfg.p,
        width=cfg.width,
        depth=cfg.depth,
        heads=cfg.heads,
        **(GROKFAST_DECODER if cfg.transformer_style == "grokfast" else {}),
        rngs=rngs,
    )


def prm_alpha(cfg: Config, n_train: int):
    """α of the gate: the config's (a number, or a grid of them), else ``b/(n − b)`` (finite
    dataset, paper Sec. 6)."""
    if cfg.optim.prm_alpha is not None:
        return cfg.optim.prm_alpha
    if cfg.train.batch_size is None or cfg.train.batch_size >= n_train:
        raise ValueError(
            f"PRM's α = b/(n − b) is undefined for batch_size={cfg.train.batch_size} with n_train="
            f"{n_train}: a full batch has no sampling noise (the gate's ŝ then only measures how "
            "the full-batch gradient drifts from step to step). Set prm_alpha explicitly (e.g. "
            "prm_alpha=1) or train on minibatches smaller than the train set."
        )
    return finite_dataset_alpha(cfg.train.batch_size, n_train)


def arms(cfg: Config, n_train: int, families=None) -> list[sweep.Arm]:
    """Every optimizer of ``cfg`` (or ``families``) at every cell of its grid; sub-runs
    ``adamw``, ``prm`` (``prm_lr0.001_prm_alpha0.1``, ... with a grid)."""
    families = cfg.optimizers if families is None else families
    alpha = prm_alpha(cfg, n_train) if "prm" in families else None
    alpha = None if isinstance(alpha, tuple) else alpha  # a grid of α: the config's own
    return sweep.arms(cfg.optim, families, prm_alpha=alpha)


def make_optimizer(cfg: Config, name: str, n_train: int) -> optax.GradientTransformation:
    """Optimizer ``name`` of a config without a grid."""
    (arm,) = arms(cfg, n_train, (name,))
    return arm.optim.build()


def make_probes(cfg: Config, optim: OptimizerConfig, n_train: int) -> list[probes.Probe]:
    out: list[probes.Probe] = []
    if optim.family == "prm":
        out.append(probes.GateStats(probes.Schedule.every(cfg.train.eval_every)))
    if cfg.norms:
        out.append(probes.Norms(probes.Schedule.every(cfg.train.eval_every)))
    step = optim.step_model()  # the step as the probes model it, numbers read from the state
    if cfg.poprisk:  # the LOO estimate for the step −p ⊙ μ, every step (THEORY §6)
        out.append(
            probes.PopulationRisk(probes.Schedule.every(1), preconditioner=step["preconditioner"])
        )
    if cfg.probes_per_decade:
        # independent of cfg.train.steps: an extended run probes where a longer one would
        sched = probes.Schedule.log(cfg.probes_per_decade, final=True)
        whole = cfg.probe_set == "train"
        spectrum_kw = dict(method="lanczos", trace_probes=4, slq_probes=4, slq_iters=12)
        if cfg.ntk_spectrum:
            out.append(
                probes.NTKSpectrum(
                    sched, top_k=8 if whole else 32, **(spectrum_kw if whole else {})
                )
            )
        if cfg.dissipation_integrator in ("stepwise", "both"):
            out.append(
                probes.StepwiseDissipation(
                    sched,
                    **step,
                    loss="softmax_ce",
                    start=cfg.dissipation_start,
                    rank=cfg.stepwise_rank,
                    rule=cfg.stepwise_rule,
                    gradient=cfg.stepwise_gradient,
                    check_spectrum=cfg.stepwise_check_spectrum,
                    record_path=(
                        max(cfg.train.steps - cfg.dissipation_start, 1)
                        if cfg.stepwise_exact_topk
                        else 0
                    ),
                )
            )
        if cfg.dissipation_integrator == "stepwise":
            return out
        # The preconditioned kernel J diag(p) Jᵀ has no structured form; NTK-vector products cost
        # O(n p · forward) where the Jacobian contraction costs O((n p)² P). The augmented
        # identity (momentum, decoupled decay) sits next to the momentum-free one (THEORY §10).
        out.append(
            probes.Dissipation(
                sched,
                **step,
                loss="softmax_ce",
                query=False,
                implementation="ntvp",
                method=cfg.dissipation_method,
                rank=cfg.dissipation_rank,
                lanczos_vectors=cfg.dissipation_vectors,
                start=cfg.dissipation_start,
                warm_start=cfg.dissipation_warm_start,
                refresh_tol=cfg.dissipation_refresh_tol,
            )
        )
    return out


def first_crossing(steps: np.ndarray, values: np.ndarray, target: float) -> list[int | None]:
    """Per seed (columns of ``values`` (T, S)), the first logged step with value >= target."""
    out = []
    for col in values.T:
        ok = np.isfinite(col) & (col >= target)
        out.append(int(steps[np.argmax(ok)]) if ok.any() else None)
    return out


def median_steps(per_seed: list[int | None]) -> float | None:
    """Median with "not reached" counted as +∞; None when the median itself is not reached."""
    vals = np.array([math.inf if s is None else s for s in per_seed], dtype=float)
    med = float(np.median(vals))
    return None if math.isinf(med) or math.isnan(med) else med


def summarize(cfg: Config, history: dict[str, np.ndarray], n_train: int) -> dict:
    steps = history["step"]
    train = probes.seed_columns(history["trainset/acc"])
    test = probes.seed_columns(history["test/acc"])
    tr = first_crossing(steps, train, cfg.train_target)
    te = first_crossing(steps, test, cfg.test_target)
    last = lambda key: probes.last_finite(history, key)
    out = {
        "steps_to_train_target": {"per_seed": tr, "median": median_steps(tr)},
        "steps_to_test_target": {"per_seed": te, "median": median_steps(te)},
        "final_train_acc": last("trainset/acc"),
        "final_test_acc": last("test/acc"),
        # memorize first, generalize later: train target reached strictly before the test target
        "memorized_first": [
            a is not None and (b is None or a < b) for a, b in zip(tr, te, strict=True)
        ],
    }
    if cfg.poprisk:
        out["poprisk_check"] = probes.population_risk_check(history, "test/loss")
    for key in ("probe/gate/gate_mean", "probe/gate/gate_open_fraction"):
        if key in history:
            g = probes.seed_columns(history[key])
            out[key.split("/")[-1] + "_final"] = last(key)
            out[key.split("/")[-1] + "_median_over_run"] = [
                float(np.median(c[np.isfinite(c)])) if np.isfinite(c).any() else None for c in g.T
            ]
    for key in ("lambda_max", "trace", "effective_rank_participation", "drift"):
        if f"probe/ntk/{key}" in history:  # "lanczos" (whole training set) has no rank/drift
            out[f"ntk/{key}_final"] = last(f"probe/ntk/{key}")
    if "probe/stepwise/identity_rel_err" in history:
        # the per-step reference; with dissipation_integrator="stepwise" it is also what is split
        block = stepwise_summary(cfg, history, n_train)
        out["dissipation" if cfg.dissipation_integrator == "stepwise" else "stepwise"] = block
    if "probe/dissipation/w_effective_rank" in history:
        # W_S advances with the preconditioned kernel held fixed between probe steps; once Adam's
        # step outgrows that linearization (η‖B K_eff‖ > 2) the accumulator overflows, so report
        # the last probe step where it is finite.
        valid = np.isfinite(probes.seed_columns(history["probe/dissipation/w_effective_rank"]))
        rows = [int(np.flatnonzero(v)[-1]) if v.any() else None for v in valid.T]
        out["dissipation/valid_until_step"] = [None if r is None else int(steps[r]) for r in rows]
        for key in ("w_effective_rank", "channel_dim", "g0_channel", "g0_reservoir"):
            v = probes.seed_columns(history[f"probe/dissipation/{key}"])
            out[f"dissipation/{key}_last_valid"] = [
                None if r is None else float(v[r, i]) for i, r in enumerate(rows)
            ]
        out["dissipation"] = dissipation_summary(cfg, history, n_train)
    return out


def stepwise_summary(cfg: Config, history: dict, n_train: int) -> dict:
    """W_S from the per-step reference (:class:`dyntheory.probes.StepwiseDissipation`) per seed:
    its identity error at the last probe step and its largest from the start on, and, with
    tracked directions, the spectrum and split of the same Gramian (THEORY.md §10)."""
    pre = "probe/stepwise/"
    col = lambda key: probes.seed_columns(history[f"{pre}{key}"])
    err = col("identity_rel_err")
    rows = np.isfinite(err).any(axis=1)
    last = lambda key: [float(x) for x in col(key)[rows][-1]] if f"{pre}{key}" in history else None
    finite = np.isfinite(err)
    steps = history["step"]
    out = {
        "step": int(steps[rows][-1]),
        "integrator": "stepwise",
        "rule": cfg.stepwise_rule,
        "gradient": cfg.stepwise_gradient,
        "start": cfg.dissipation_start,
        "n_examples": n_train,
        "outputs": n_train * cfg.p,
        "rank": cfg.stepwise_rank,
        # the object whose identity error is reported and (with a rank) whose spectrum is split
        "split_of": (
            "W (THEORY.md §10: the augmented recursion along the realized path, advanced every "
            f"step), its g-block in the {cfg.stepwise_rank} tracked directions Q(s) = g(s) and "
            "the leading eigenvectors of Π K_s Π"
            if cfg.stepwise_rank
            else None
        ),
        "identity_rel_err": last("identity_rel_err"),
        "max_identity_rel_err": [
            float(np.max(c[f])) if f.any() else None for c, f in zip(err.T, finite.T, strict=True)
        ],
        "argmax_step": [
            int(steps[f][np.argmax(c[f])]) if f.any() else None
            for c, f in zip(err.T, finite.T, strict=True)
        ],
        "loss_drop": last("loss_drop"),
        "predicted_loss_drop": last("predicted_loss_drop"),
        "norm_ratio": last("norm_ratio"),
    }
    parts = ("channel_dim", "w_lambda_max", "g0_channel", "g0_reservoir", "dissipated_channel")
    checks = ("g_block_rel_err", "spectrum_half_rel_err", "spectrum_rel_err", "w_lambda_max_ref")
    for key in (*parts, "dissipated_reservoir", *checks):
        out[key] = last(key)
    for key in ("spectrum_half_rel_err", "spectrum_rel_err"):  # the largest from the start on
        if f"{pre}{key}" in history:
            out[f"max_{key}"] = [float(np.nanmax(c)) for c in col(key)[rows].T]
    return out


def exact_spectrum(cfg: Config, probe, result, apply_fn, params0, x) -> dict:
    """Per seed, the top ``k`` eigenvalues of the whole ``W_gg`` at the last step by the adjoint
    over the recorded path (:func:`dyntheory.probes.stepwise_path.exact_topk`), and the tracked
    block's (``stepwise_rank``) and the complete basis's (``stepwise_check_spectrum``) top ``k``
    against them (:func:`dyntheory.split.top_rel_err`)."""
    k = cfg.stepwise_exact_topk
    buf = result.probe_states[probe.name].path
    batched = buf.w.ndim == 3  # a member axis (seeds, cells)
    out = {
        "exact_top_eigenvalues": [],
        "exact_vs_tracked_rel_err": [],
        "exact_vs_complete_rel_err": [],
    }
    x = jnp.asarray(x)
    for m in range(buf.w.shape[0] if batched else 1):
        one = jax.tree.map(lambda a, m=m: a[m], buf) if batched else buf
        lam, _ = stepwise_path.exact_topk(probe, apply_fn, x, params0, one, k, num_iters=60)
        out["exact_top_eigenvalues"].append([float(v) for v in lam])
        for name, arr in (("tracked", "w_eigenvalues"), ("complete", "w_eigenvalues_ref")):
            got = result.arrays.get(f"{probe.name}/{arr}")
            if got is None:
                out[f"exact_vs_{name}_rel_err"].append(None)
                continue
            got = np.asarray(got)
            last = got[-1, m] if got.ndim == 3 else got[-1]
            err = split.top_rel_err(jnp.asarray(last), lam, k)
            out[f"exact_vs_{name}_rel_err"].append(float(err))
    return out


def dissipation_summary(cfg: Config, history: dict, n_train: int) -> dict:
    """W_S at the last probe step, per seed, with its validity checks (THEORY.md §10)."""
    pre = "probe/dissipation/"
    logged = np.isfinite(probes.seed_columns(history[f"{pre}loss_drop"])).any(axis=1)
    at = lambda key: [float(x) for x in probes.seed_columns(history[f"{pre}{key}"])[logged][-1]]
    over = lambda key: [float(np.nanmax(c)) for c in probes.seed_columns(history[f"{pre}{key}"]).T]
    n = n_train if cfg.probe_set == "train" else min(cfg.train.probe_size or n_train, n_train)
    return {
        "step": int(history["step"][logged][-1]),
        "n_examples": n,
        "outputs": n * cfg.p,
        "method": cfg.dissipation_method,
        "rank": cfg.dissipation_rank if cfg.dissipation_method == "lowrank" else n * cfg.p,
        # the object whose spectrum, split and channel are reported, and its own identity error
        "split_of": "W_S (THEORY.md §3, momentum-free), modulo the logit shifts (Π W_S Π)",
        "identity_rel_err": at("identity_rel_err"),
        "loss_drop": at("loss_drop"),
        "predicted_loss_drop": at("predicted_loss_drop"),
        # momentum, Adam's bias correction, decoupled decay, second order (THEORY §10)
        "identity_rel_err_augmented": at("identity_rel_err_augmented"),
        "predicted_loss_drop_augmented": at("predicted_loss_drop_augmented"),
        "channel_dim": at("channel_dim"),
        "g0_channel": at("g0_channel"),
        "g_channel": at("g_channel"),
        "g_reservoir": at("g_reservoir"),
        "bk_lambda_max_max_over_run": over("bk_lambda_max"),
        "stability_max_over_run": over("stability"),
    }


def gate_per_tensor(cfg: Config, optim: OptimizerConfig, opt_state) -> dict[str, list[float]]:
    """PRM's gate at the final state, averaged over each parameter tensor: which parts it shuts.

    :meth:`dyntheory.optim.config.OptimizerConfig.gate` per seed; returns ``{"<layer path>":
    [mean q per seed]}`` (fraction of the update Adam would make).
    """
    gate = jax.vmap(optim.gate) if cfg.train.seeds > 1 else optim.gate
    q = jax.jit(gate)(opt_state)  # one program, not one per operation and tensor shape
    out = {}
    for path, leaf in jax.tree.flatten_with_path(q)[0]:
        leaf = np.asarray(leaf, np.float64).reshape(max(cfg.train.seeds, 1), -1)
        out[probes.path_name(path)] = leaf.mean(axis=1).tolist()
    return out


def run(cfg: Config, run_dir) -> dict:
    """Train every optimizer of ``cfg`` on every seed; write ``results.json``.

    ``run_dir`` is the run directory (a :class:`dyntheory.engine.rundir.RunDir` or a path); each
    optimizer (each cell of a grid) lands in its own sub-run under it
    (:func:`dyntheory.engine.sweep.run_arms`: the cells of a grid train in one program) and
    resumes from its checkpoints while the config is unchanged (``dyntheory resume``). Returns
    the results (also written).
    """
    out = Path(run_dir)
    main = sharding.is_main_process()  # only process 0 writes files in a multi-process run
    if main:
        out.mkdir(parents=True, exist_ok=True)
    if main and not (out / rundir.CONFIG).exists():
        rundir.write_json(out / rundir.CONFIG, {"experiment": "grokking", "config": to_dict(cfg)})
    data = load_data(cfg)
    n_train = len(data.y_train)
    alpha = prm_alpha(cfg, n_train) if "prm" in cfg.optimizers else None  # fails before compute
    apply_fn, params0 = abstract(lambda: build_model(cfg, data, jax.random.key(0)))
    init_params = lambda key: functional(build_model(cfg, data, key))[1]
    train = {"x": data.x_train, "y": data.y_train}
    eval_sets = {"test": {"x": data.x_test, "y": data.y_test}, "trainset": train}

    todo = arms(cfg, n_train)
    done = sweep.run_arms(
        cfg.train,
        todo,
        out=out,
        config=cfg,
        probes=lambda optim: make_probes(cfg, optim, n_train),
        apply_fn=apply_fn,
        init_params=init_params,
        data=train,
        loss="softmax_ce",
        eval_sets=eval_sets,
        # probe_set="train": the probes see the whole training set (the run's own W_S)
        probe_data={"train": train} if cfg.probe_set == "train" else None,
    )
    per_opt = {}
    for arm in todo:
        res = done[arm.name]
        per_opt[arm.name] = summarize(cfg, res.result.history, n_train) | {
            "wall_time_s": res.wall_s,
            "arms_in_program": res.arms_in_program,
        }
        if cfg.stepwise_exact_topk:
            key = "dissipation" if cfg.dissipation_integrator == "stepwise" else "stepwise"
            probe = next(
                p
                for p in make_probes(cfg, arm.optim, n_train)
                if isinstance(p, probes.StepwiseDissipation)
            )
            per_opt[arm.name][key] |= exact_spectrum(
                cfg, probe, res.result, apply_fn, params0, train["x"]
            )
        if arm.optim.family == "prm":
            per_opt[arm.name]["gate_mean_per_tensor_final"] = gate_per_tensor(
                cfg, arm.optim, res.result.state.opt_state
            )

    te = {o: r["steps_to_test_target"] for o, r in per_opt.items()}
    both = "adamw" in te and "prm" in te
    r_ap = ratio(te["adamw"]["median"], te["prm"]["median"]) if both else None
    results = {
        "experiment": "grokking",
        "task": {
            "p": cfg.p,
            "op": cfg.op,
            "train_fraction": cfg.train_fraction,
            "n_train": n_train,
            "n_test": len(data.y_test),
        },
        "model": {"kind": cfg.model, "params": count_params(params0)},
        "steps": cfg.train.steps,
        "seeds": [cfg.train.seed + s for s in range(cfg.train.seeds)],
        "step_resolution": cfg.train.eval_every,
        "train_target": cfg.train_target,
        "test_target": cfg.test_target,
        "prm_alpha": alpha,
        "optimizers": per_opt,
        # steps to the test target, AdamW / PRM: > 1 means PRM generalizes in fewer steps
        "ratio_adamw_over_prm": r_ap,
        "ratio_adamw_over_prm_per_seed": [
            ratio(a, b) for a, b in zip(te["adamw"]["per_seed"], te["prm"]["per_seed"], strict=True)
        ]
        if both
        else None,
        "prm_at_least_2x_fewer_steps": None if r_ap is None else bool(r_ap >= 2.0),
        # the positive control: > 1 means Grokfast generalizes in fewer steps than AdamW
        "ratio_adamw_over_grokfast": ratio(te["adamw"]["median"], te["grokfast"]["median"])
        if "adamw" in te and "grokfast" in te
        else None,
        # the engine's clocks of every program, summed over every process that ran it
        "wall_time_s": sweep.total_seconds(done),
    }
    if main:
        rundir.write_json(out / rundir.RESULTS, results)
    return results
