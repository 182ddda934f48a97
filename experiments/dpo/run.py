"""SFT a reference, then DPO with AdamW and PRM over an lr grid; summarize against the paper.

Run directory (``out_dir``)::

    config.json               the resolved config (written here if the caller has not)
    sft/                      the reference's engine run (metrics.jsonl: SFT loss, held-out NLL)
    <optimizer>_lr<lr>/       one sub-run per (optimizer, lr), every seed: metrics.jsonl with
                              "val/acc", "test_acc", "test/true_acc", "test/drift",
                              "trainset/flip_fit", ..., and PRM's "probe/gate/gate_mean"
    <arm>+<n>.sweep/          the one program that trained an optimizer's lrs (checkpoints/)
    results.json              per arm and per seed, the selected lr of each optimizer, the
                              comparison with the paper and its verdict

``dyntheory resume`` reruns every stage from the start (the stages are minutes long).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

from dyntheory import probes
from dyntheory.engine import fit, records, rundir, sweep
from dyntheory.engine.config import to_dict
from dyntheory.engine.rundir import subrun_dir
from dyntheory.models import Transformer, abstract, count_params, functional
from dyntheory.optim import finite_dataset_alpha
from dyntheory.optim.config import OptimizerConfig
from experiments.dpo.config import Config
from experiments.dpo.data import PreferenceData, agreement, make_task
from experiments.dpo.losses import batched_logprob, make_dpo_loss, make_sft_loss

PAPER = {"adamw_acc": 0.566, "prm_acc": 0.641, "drift_ratio_adamw_over_prm": 3.05}
MEASURES = tuple(
    f"eval/{k}"
    for k in ("val_acc", "test_acc", "test_true_acc", "test_drift", "train_acc", "train_flip_fit")
)


def build_model(cfg: Config, key: jax.Array) -> nnx.Module:
    t = cfg.task
    return Transformer(
        t.vocab_size,
        t.seq_len - 1,
        width=cfg.width,
        depth=cfg.depth,
        heads=cfg.heads,
        readout="all",
        rngs=nnx.Rngs(key),
    )


def arm_name(optim: OptimizerConfig, keys=()) -> str:
    """The sub-run of one (optimizer, lr): ``prm_lr3e-05`` (then any other swept number)."""
    rest = optim.label([k for k in keys if k != "lr" and k in optim.numbers])
    return f"{optim.family}_lr{optim.lr:g}" + (f"_{rest}" if rest else "")


def train_reference(cfg: Config, data: PreferenceData, apply_fn, out: Path):
    """SFT (AdamW, no weight decay) on both responses of every train pair; returns the params."""
    t = cfg.task
    sft_cfg = dataclasses.replace(
        cfg.train,
        steps=cfg.sft_steps,
        batch_size=min(cfg.sft_batch, 2 * t.n_train),
        seeds=1,
        fuse=min(cfg.train.fuse, cfg.sft_steps),
        eval_every=max(cfg.sft_steps // 4, 1),
        log_every=max(cfg.sft_steps // 16, 1),
        checkpoint_every=0,
    )
    held = np.concatenate([data.val["w"], data.val["l"]])
    result = fit(
        sft_cfg,
        apply_fn=apply_fn,
        init_params=lambda key: functional(build_model(cfg, key))[1],
        optimizer=optax.adamw(cfg.sft_lr, weight_decay=0.0),
        data={"x": np.concatenate([data.train["w"], data.train["l"]])},
        loss=make_sft_loss(t.prompt_len, t.pad),
        eval_sets={"val": {"x": held}},
        run_dir=subrun_dir(out / "sft", {"sft": to_dict(cfg)}),
    )
    summary = {k: float(np.asarray(result.final[k])) for k in ("train/loss", "val/loss")}
    summary["wall_time_s"] = records.run_seconds(result.history)
    return jax.device_get(result.state.params), summary


def with_reference(splits: list[dict], apply_fn, ref, t) -> list[dict]:
    """Each split with the reference's log-probabilities of its responses, ``ref_w`` and
    ``ref_l``: every sequence of every split goes through one batched call, so one compiled
    program serves them all (a row's value does not depend on its batch)."""
    seqs = [s[k] for s in splits for k in ("w", "l")]
    lp = batched_logprob(apply_fn, ref, np.concatenate(seqs), t.prompt_len, t.pad)
    lp = np.split(lp, np.cumsum([len(x) for x in seqs])[:-1])
    return [{**s, "ref_w": lp[2 * i], "ref_l": lp[2 * i + 1]} for i, s in enumerate(splits)]


def prm_alpha(cfg: Config) -> float:
    """α of the gate: the config's, else ``b/(n − b)`` (a fixed dataset, paper Sec. 6)."""
    return (
        cfg.optim.prm_alpha
        if cfg.optim.prm_alpha is not None
        else finite_dataset_alpha(cfg.train.batch_size, cfg.task.n_train)
    )


def summarize_arm(history: dict[str, np.ndarray], lr: float) -> dict:
    """Final value per seed of every measure, their medians, and PRM's gate over the run."""
    out: dict = {"lr": lr}
    for key in MEASURES:
        col = probes.seed_columns(history[key])
        ok = np.isfinite(col).all(axis=1)
        final = col[np.flatnonzero(ok)[-1]] if ok.any() else np.full(col.shape[1], np.nan)
        name = key.removeprefix("eval/")
        out[name] = [float(v) for v in final]
        out[f"median {name}"] = float(np.median(final))
    for key in ("gate_mean", "gate_open_fraction"):
        if f"probe/gate/{key}" in history:
            g = probes.seed_columns(history[f"probe/gate/{key}"])
            rows = np.isfinite(g).all(axis=1)
            out[f"{key} final"] = [float(v) for v in g[np.flatnonzero(rows)[-1]]]
            out[f"{key} median over run"] = [float(np.median(c[np.isfinite(c)])) for c in g.T]
    return out


def matched_drift(arms: dict, best: dict) -> dict | None:
    """The AdamW lr whose median test drift is closest (in log ratio) to PRM's at its selected lr:
    is PRM's accuracy better than AdamW's *at the same distance from the reference*? (A smaller
    step alone shrinks the drift.)"""
    if not {"adamw", "prm"} <= arms.keys() or not best["prm"]["median test_drift"] > 0:
        return None
    target = np.log(best["prm"]["median test_drift"])
    gap = lambda a: abs(np.log(max(a["median test_drift"], 1e-30)) - target)
    a = min(arms["adamw"].values(), key=gap)
    keys = ("lr", "median test_acc", "median test_true_acc", "median test_drift")
    return {k: a[k] for k in keys}


def verdict(best: dict) -> dict:
    """The paper's two numbers beside ours, and a verdict by fixed rules.

    Accuracy gain: PRM's median clean test accuracy minus AdamW's; it "holds" when it is positive
    and every PRM seed beats every AdamW seed. Drift: AdamW's median mean |r̂| over PRM's; it
    "holds" when ≥ 2 (the paper: 3.05). Reproduced: both hold; partly: one; not: neither.
    """
    a, p = best["adamw"], best["prm"]
    gain = p["median test_acc"] - a["median test_acc"]
    acc_holds = gain > 0 and min(p["test_acc"]) > max(a["test_acc"])
    ratio = a["median test_drift"] / p["median test_drift"] if p["median test_drift"] > 0 else None
    drift_holds = ratio is not None and ratio >= 2.0
    word = {2: "reproduced", 1: "partly", 0: "not reproduced"}[int(acc_holds) + int(drift_holds)]
    reason = (
        f"clean reward accuracy {a['median test_acc']:.3f} (AdamW, lr {a['lr']:g}) vs "
        f"{p['median test_acc']:.3f} (PRM, lr {p['lr']:g}): {gain:+.3f}, "
        + ("every PRM seed above every AdamW seed" if acc_holds else "not a consistent gain")
        + "; drift ratio AdamW/PRM "
        + ("undefined" if ratio is None else f"{ratio:.2f}×")
        + (" (≥ 2)" if drift_holds else " (< 2)")
    )
    return {
        "paper": PAPER,
        "ours": {
            "adamw_acc": a["median test_acc"],
            "prm_acc": p["median test_acc"],
            "adamw_true_acc": a["median test_true_acc"],
            "prm_true_acc": p["median test_true_acc"],
            "drift_ratio_adamw_over_prm": ratio,
        },
        "verdict": word,
        "reason": reason,
    }


def run(cfg: Config, run_dir) -> dict:
    """SFT the reference, DPO every (optimizer, lr) on every seed; write ``results.json``."""
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / rundir.CONFIG).exists():
        rundir.write_json(out / rundir.CONFIG, {"experiment": "dpo", "config": to_dict(cfg)})
    t = cfg.task
    data = make_task(t)
    apply_fn, params0 = abstract(lambda: build_model(cfg, jax.random.key(0)))
    ref, sft = train_reference(cfg, data, apply_fn, out)
    splits = with_reference([data.train, data.val, data.test], apply_fn, ref, t)
    train = splits[0]
    every = {k: np.concatenate([s[k] for s in splits]) for k in train}
    every["part"] = np.repeat(np.arange(3, dtype=np.int32), [len(s["w"]) for s in splits])
    eval_sets = {"eval": every}  # all three splits in one set: metrics "eval/<split>_<name>"
    loss = make_dpo_loss(cfg.beta, t.prompt_len, t.pad)
    alpha = prm_alpha(cfg)

    every = cfg.train.eval_every or cfg.train.steps
    todo = sweep.arms(cfg.optim, cfg.optimizers, name=arm_name, prm_alpha=alpha)
    done = sweep.run_arms(
        cfg.train,
        todo,
        out=out,
        config=cfg,
        probes=lambda o: (
            [probes.GateStats(probes.Schedule.every(every))] if o.family == "prm" else []
        ),
        apply_fn=apply_fn,
        init_params=ref,  # every seed starts at the reference
        data=train,
        loss=loss,
        eval_sets=eval_sets,
    )
    arms: dict[str, dict[str, dict]] = {}
    for a in todo:
        arm = summarize_arm(done[a.name].result.history, a.optim.lr)
        arm["wall_time_s"] = done[a.name].wall_s
        arm["arms_in_program"] = done[a.name].arms_in_program
        rest = a.name.removeprefix(f"{a.optim.family}_lr").removeprefix(f"{a.optim.lr:g}")
        arms.setdefault(a.optim.family, {})[f"{a.optim.lr:g}{rest}"] = arm

    best = {
        opt: max(by_lr.values(), key=lambda a: (a["median val_acc"], -a["lr"]))
        for opt, by_lr in arms.items()
    }
    results = {
        "experiment": "dpo",
        "task": {
            "n_train": t.n_train,
            "n_val": t.n_val,
            "n_test": t.n_test,
            "flipped_train_pairs": int(data.train["flipped"].sum()),
            "flip": t.flip,
            "seq_len": t.seq_len,
            "vocab_size": t.vocab_size,
            # fraction of clean labels agreeing with the true reward: Bradley–Terry noise alone
            "label_true_agreement_test": agreement(data.test),
            "label_true_agreement_train": agreement(data.train),
        },
        "model": {"params": count_params(params0), "width": cfg.width, "depth": cfg.depth},
        "reference": sft,
        "beta": cfg.beta,
        "prm_alpha": alpha if "prm" in cfg.optimizers else None,
        "steps": cfg.train.steps,
        "epochs": cfg.train.steps * cfg.train.batch_size / t.n_train,
        "seeds": [cfg.train.seed + s for s in range(cfg.train.seeds)],
        "arms": arms,
        "best": best,
        "claims": verdict(best) if {"adamw", "prm"} <= best.keys() else None,
        "adamw_at_prm_drift": matched_drift(arms, best),
        # the engine's clocks of every sub-run, summed over every process that ran it
        "wall_time_s": sft["wall_time_s"]
        + sum(a["wall_time_s"] for by_lr in arms.values() for a in by_lr.values()),
    }
    rundir.write_json(out / rundir.RESULTS, results)
    return results
