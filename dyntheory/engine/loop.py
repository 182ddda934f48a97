"""The host side of :meth:`dyntheory.engine.Trainer.run`: dispatch, log, probe, checkpoint, resume.

Order of work at a step ``t`` (the same in an uninterrupted and a resumed run, which is what makes
resuming exact): checkpoint (if due; the state *before* step ``t``) → probes due at ``t`` → one
dispatch of up to ``cfg.fuse`` steps, cut short at the next probe or checkpoint step → read the
*previous* dispatch's metrics (NaN check, metrics lines, progress bar). After the last step: a
checkpoint, the probes due at the end, and a final metrics line measured at the final params.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from dyntheory.engine import faults, integrity, owned, records, rundir, sharding
from dyntheory.engine.events import EVENTS, EventWriter
from dyntheory.engine.progress import Progress
from dyntheory.engine.state import FitResult, NonFiniteError, TrainState


class _Clock:
    """Cumulative seconds: ``train_s`` (wall time minus the others), ``probe_s`` (and per probe),
    ``checkpoint_s``, ``compile_s`` (ahead-of-time compilation of the step and probe functions)."""

    EXCLUSIVE = ("probe_s", "checkpoint_s", "compile_s")

    def __init__(self, saved: dict[str, float] | None = None):
        self.saved = dict(saved or {})
        self.t0 = time.perf_counter()
        self.spent: dict[str, float] = {}

    def add(self, key: str, seconds: float) -> None:
        self.spent[key] = self.spent.get(key, 0.0) + seconds

    def totals(self) -> dict[str, float]:
        out = {
            k: self.saved.get(k, 0.0) + self.spent.get(k, 0.0)
            for k in {*self.saved, *self.spent, *self.EXCLUSIVE}
        }
        other = sum(self.spent.get(k, 0.0) for k in self.EXCLUSIVE)
        out["train_s"] = self.saved.get("train_s", 0.0) + time.perf_counter() - self.t0 - other
        return out


def _ckpt_tree(state: TrainState, pstates) -> dict:
    return {
        "params": state.params,
        "opt_state": state.opt_state,
        "step": state.step,
        "key": jax.random.key_data(state.key),
        "probes": tuple(pstates),
    }


def _abstract_ckpt(tr) -> dict:
    a, sh = tr.abstract_state, tr.state_shardings
    rep = tr.replicated
    sds = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
    pstates = tr.prober.abstract(a)
    key = jax.eval_shape(jax.random.key_data, a.key)
    return {
        "params": jax.tree.map(sds, a.params, sh.params),
        "opt_state": jax.tree.map(sds, a.opt_state, sh.opt_state),
        "step": sds(a.step, rep),
        "key": sds(key, rep),
        "probes": jax.tree.map(lambda x: sds(x, rep), pstates),
    }


def run_loop(
    tr,
    run_dir=None,
    *,
    steps: int | None = None,
    resume: bool = True,
    progress: bool | None = None,
) -> FitResult:
    """Train ``tr`` to ``steps``; with ``run_dir``, holding its lock (:meth:`RunDir.lock`)."""
    if run_dir is None:
        return _run(tr, None, steps, resume, progress)
    rd = run_dir if isinstance(run_dir, rundir.RunDir) else rundir.RunDir(run_dir)
    with rd.lock():
        if sharding.is_main_process():
            rd.check_writable()  # before any compute
        return _run(tr, rd, steps, resume, progress)


def _run(tr, rd, steps, resume, progress) -> FitResult:
    cfg = tr.cfg
    total = cfg.steps if steps is None else int(steps)
    if total < 1:
        raise ValueError(f"steps must be >= 1, got {total}.")
    main = sharding.is_main_process()
    ckpt, start, recorded, probe_lines, written = (
        None,
        None,
        {p.name: [] for p in tr.probes},
        {},
        [],
    )
    clock_saved, candidates = None, ()
    if rd is not None:
        # only the main process reads and writes the run directory; the others follow its plan
        error, plan = None, integrity.Plan(None, (), ())
        if main:
            clash = owned.collision(rd.path)
            if clash is not None:
                error = rundir.RunDirError(
                    f"{clash} exists and was not written by dyntheory; a run in {rd.path} "
                    "would overwrite it. Choose another run directory."
                )
            elif resume:
                try:
                    plan = integrity.plan(rd.path)
                except integrity.IntegrityError as e:
                    error = e
        sharding.agree(error)
        start = sharding.from_main(-1 if plan.start is None else plan.start)
        start, candidates = (None if start < 0 else start), plan.candidates
        if main:
            integrity.say(plan.notes)
            owned.remove_leftovers(rd.path)
            owned.mark(rd.path)
            if start is None:
                rd.reset()  # nothing to resume (or an explicit start over): no old files stay
        ckpt = rd.checkpointer(cfg.keep_checkpoints)
    if start is not None:
        if start > total:
            raise ValueError(
                f"the latest checkpoint is at step {start}, beyond steps={total}; "
                f"set steps >= {start} to resume."
            )
        log = rd.file(rundir.LOG)
        if main:
            owned.claim(log)  # before a failed restore can write it
        start, tree, meta = ckpt.restore_first((start, *candidates), _abstract_ckpt(tr), log)
        if main:
            ckpt.drop_after(start)  # --truncate went back past them: this run rewrites them
        state = TrainState(
            tree["params"], tree["opt_state"], tree["step"], jax.random.wrap_key_data(tree["key"])
        )
        state = tr.with_current_hyperparams(state)  # a resume may change the optimizer's numbers
        pstates = tuple(tree["probes"])
        clock_saved = meta.get("time")
        recorded.update(records.unstack_arrays(rd.read_arrays(), start))
        if main:
            rd.truncate_metrics(start)
        logged = sharding.from_main(
            sum(1 for line in rd.read_metrics() if line["step"] < start) if main else 0
        )
    else:
        state = tr.init_state()
        pstates = tr.prober.init(state)
        start, logged = 0, 0

    events = EventWriter(rd.file(EVENTS)) if rd is not None and main and cfg.tensorboard else None
    clock = _Clock(clock_saved)
    bar = Progress(total, start, show=progress if main else False)
    t_start = time.perf_counter()
    with bar.compiling():
        tr.compile(state, pstates)
    clock.add("compile_s", time.perf_counter() - t_start)
    seeds = tr.members if tr.seeded else None  # members: cells × seeds
    every_log, every_eval = cfg.log_every, cfg.eval_every

    count = {"lines": logged}

    def emit(step: int, values: dict[str, np.ndarray]) -> list[dict]:
        values = {**values, **probe_lines.pop(step, {})}
        times = {f"time/{k}": v for k, v in sorted(clock.totals().items())}
        if seeds is None:
            lines = [{"step": step, **{k: float(v) for k, v in values.items()}, **times}]
        else:
            lines = [
                {"step": step, "seed": s, **{k: float(v[s]) for k, v in values.items()}, **times}
                for s in range(seeds)
            ]
        count["lines"] += len(lines)
        if rd is None:
            written.extend(lines)
        elif main:
            rd.append_metrics(lines)
            if events is not None:
                events.write(lines)
        return lines

    def process(pending) -> None:
        """Read a dispatch's metrics: NaN check, metrics lines, progress bar."""
        t0, n, metrics = pending
        m = sharding.to_host(metrics)
        params_finite = m.pop("_params_finite")
        eval_keys = tuple(f"{name}/" for name in tr.eval_sets)
        for i in range(n):
            t = t0 + i
            bad = ~np.isfinite(np.atleast_1d(m["train/loss"][i]))
            if bad.any():
                _raise("train/loss", t, bad, ckpt, tr)
            due_eval = bool(every_eval) and t % every_eval == 0
            if t % every_log == 0 or due_eval or t in probe_lines:
                vals = {k: v[i] for k, v in m.items() if due_eval or not k.startswith(eval_keys)}
                bar.update(t, emit(t, vals)[0])
            bad = ~np.atleast_1d(params_finite[i])
            if bad.any():  # the update of step t produced the params of step t + 1
                _raise("params", t + 1, bad, ckpt, tr)

    def run_probes(t: int, state: TrainState, pstates):
        due = [i for i, p in enumerate(tr.probes) if p.schedule.due(t, total)]
        if not due:
            return pstates
        jax.block_until_ready(state)
        pstates = list(pstates)
        for i in due:
            probe = tr.probes[i]
            t_start = time.perf_counter()
            pstates[i], scalars, arrays = tr.prober(probe, pstates[i], state, t)
            jax.block_until_ready(pstates[i])
            scalars, arrays = sharding.to_host((scalars, arrays))
            seconds = time.perf_counter() - t_start
            clock.add("probe_s", seconds)
            clock.add(f"probe/{probe.name}_s", seconds)
            probe_lines.setdefault(t, {}).update(
                {f"probe/{probe.name}/{k}": v for k, v in scalars.items()}
            )
            if arrays:
                recorded[probe.name].append((t, arrays))
        return tuple(pstates)

    def save(t: int, state: TrainState, pstates) -> None:
        t_start = time.perf_counter()
        if main:
            rd.write_arrays(records.stack_arrays(recorded))
        # what the run files hold before step t: a resume checks them against it (integrity)
        done = {"metrics_lines": count["lines"], "probes": {k: len(v) for k, v in recorded.items()}}
        faults.point("checkpoint:before-save")
        meta = {"step": t, "time": clock.totals(), "records": done}
        ckpt.save(t, _ckpt_tree(state, pstates), meta)
        faults.point("checkpoint:after-save")
        clock.add("checkpoint_s", time.perf_counter() - t_start)

    t, pending = start, None
    try:
        while True:
            if (
                ckpt is not None
                and t != start
                and (t == total or (cfg.checkpoint_every and t % cfg.checkpoint_every == 0))
            ):
                if pending is not None:
                    process(pending)
                    pending = None
                save(t, state, pstates)
            if t == total:
                break
            pstates = run_probes(t, state, pstates)
            stop = min(
                [total]
                + [p.schedule.next(t, total) for p in tr.probes]
                + (
                    [(t // cfg.checkpoint_every + 1) * cfg.checkpoint_every]
                    if ckpt is not None and cfg.checkpoint_every
                    else []
                )
            )
            n = min(cfg.fuse, stop - t)
            state, pstates, metrics = tr.advance(state, pstates, n)
            if pending is not None:
                process(pending)
            pending = (t, n, metrics)
            t += n
        if pending is not None:
            process(pending)
        pstates = run_probes(total, state, pstates)
        state, pstates, final = tr.advance(state, pstates, 0, measure=True)
        final = {k: v[0] for k, v in sharding.to_host(final).items() if k != "_params_finite"}
        emit(total, final)
        bar.update(total, {k: np.mean(v) for k, v in final.items()})
        arrays = records.stack_arrays(recorded)
        if rd is not None and main:
            rd.write_arrays(arrays)
    finally:
        bar.close()
        if events is not None:
            events.close()
        if ckpt is not None:
            ckpt.close()
    # only the main process writes (and on another host, sees) the metrics file
    lines = written if rd is None else sharding.json_from_main(rd.read_metrics() if main else None)
    history = records.metrics_table(lines)
    probe_states = {p.name: ps for p, ps in zip(tr.probes, pstates, strict=True)}
    return FitResult(
        state, final, history, arrays, probe_states, rd.path if rd is not None else None
    )


def _raise(quantity: str, step: int, mask: np.ndarray, ckpt, tr) -> None:
    member = member_name(tr, int(np.argmax(mask))) if tr.seeded else None
    raise NonFiniteError(step, quantity, ckpt.latest_step() if ckpt is not None else None, member)


def member_name(tr, m: int) -> str:
    """Member ``m`` of a population (cells × seeds, cell ``m // S``) as a person names it:
    ``"seed 1"``, or ``"cell lr=0.01, prm_alpha=0.4, seed 1"`` in a grid: the settings that differ
    between its cells, and the seed counted within its cell (as the cell's sub-run numbers it)."""
    seeds = tr.cfg.seeds
    seed = f"seed {m % seeds}"
    if tr.grid is None:
        return seed
    varied = [k for k in tr.grid[0] if len({c[k] for c in tr.grid}) > 1] or list(tr.grid[0])
    cell = tr.grid[m // seeds]
    return f"cell {', '.join(f'{k}={cell[k]:g}' for k in varied)}, {seed}"
