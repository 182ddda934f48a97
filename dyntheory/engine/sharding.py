"""Device mesh, array layouts and multi-host start-up for the training engine.

One mesh axis, ``"data"``, over all (or the first ``n``) devices. Two layouts of the train state:

- ``"replicated"`` (data parallel, the default): every parameter and optimizer-state leaf is
  replicated; batches are sharded along their example axis.
- ``"fsdp"`` (parameter sharded, ZeRO-3 style): each leaf is sharded over ``"data"`` along its
  largest axis divisible by the device count (replicated when none is); XLA inserts the
  all-gathers. The rule looks at shapes only, so Adam's ``mu``/``nu`` get their parameter's layout.

With ``seeds`` batched by ``vmap`` every leaf has a leading seed axis, which is never sharded.

The mesh uses ``AxisType.Auto`` axes (classic GSPMD: ``jit`` in/out shardings and
``with_sharding_constraint``), so eager operations on its arrays need no ``jax.set_mesh``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"
Layout = Literal["replicated", "fsdp"]
LAYOUTS = ("replicated", "fsdp")

_distributed_started = False


def initialize_distributed() -> bool:
    """Start ``jax.distributed`` when launched multi-host; a no-op on one host.

    Multi-host is detected from the environment: ``JAX_COORDINATOR_ADDRESS`` (with
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``), or ``DYNTHEORY_DISTRIBUTED=1`` to let JAX
    auto-detect a cluster (SLURM, Open MPI, Kubernetes, Cloud TPU).
    ``DYNTHEORY_HEARTBEAT_TIMEOUT_S`` sets how long the others wait for a process that died before
    JAX's distributed runtime stops them with an error (JAX's default: 100 s). Must run before any
    other JAX call touches the devices. Returns whether ``jax.distributed`` was (already)
    initialized.
    """
    global _distributed_started
    if _distributed_started:
        return True
    env = os.environ
    timeouts = {}
    if env.get("DYNTHEORY_HEARTBEAT_TIMEOUT_S"):
        timeouts["heartbeat_timeout_seconds"] = int(env["DYNTHEORY_HEARTBEAT_TIMEOUT_S"])
    if env.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]) if "JAX_NUM_PROCESSES" in env else None,
            process_id=int(env["JAX_PROCESS_ID"]) if "JAX_PROCESS_ID" in env else None,
            **timeouts,
        )
    elif env.get("DYNTHEORY_DISTRIBUTED") == "1":
        jax.distributed.initialize(**timeouts)
    else:
        return False
    _distributed_started = True
    return True


def make_mesh(devices: int = 0) -> Mesh:
    """A 1-D ``("data",)`` mesh over the first ``devices`` devices (``0``: all of them)."""
    initialize_distributed()
    available = jax.devices()
    n = len(available) if devices in (0, None) else int(devices)
    if not 1 <= n <= len(available):
        raise ValueError(f"devices={devices}: this process sees {len(available)} device(s).")
    return jax.make_mesh((n,), (AXIS,), axis_types=(AxisType.Auto,), devices=available[:n])


def mesh_size(mesh: Mesh) -> int:
    return int(mesh.shape[AXIS])


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, seed_axis: bool = False) -> NamedSharding:
    """Examples (axis 0, or axis 1 after a seed axis) split over ``"data"``."""
    return NamedSharding(mesh, P(None, AXIS) if seed_axis else P(AXIS))


def fsdp_spec(shape: tuple[int, ...], n: int, skip_leading: bool = False) -> P:
    """Shard the largest axis divisible by ``n`` (the first such on ties); else replicate."""
    axes = range(1 if skip_leading else 0, len(shape))
    best = max(
        (a for a in axes if shape[a] % n == 0 and shape[a] >= n),
        key=lambda a: shape[a],
        default=None,
    )
    if best is None or n == 1:
        return P()
    spec = [None] * len(shape)
    spec[best] = AXIS
    return P(*spec)


def state_shardings(abstract: Any, mesh: Mesh, layout: Layout, seed_axis: bool = False) -> Any:
    """Shardings for a pytree of ``ShapeDtypeStruct`` (params, optimizer state) under ``layout``."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    n = mesh_size(mesh)

    def one(x):
        if layout == "replicated" or not hasattr(x, "shape"):
            return replicated(mesh)
        return NamedSharding(mesh, fsdp_spec(tuple(x.shape), n, skip_leading=seed_axis))

    return jax.tree.map(one, abstract)


def put(x: Any, sharding: NamedSharding) -> jax.Array:
    """Place a host array (identical on every process) as a global array with ``sharding``."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def put_tree(tree: Any, sharding: NamedSharding) -> Any:
    return jax.tree.map(lambda x: put(x, sharding), tree)


def to_host(tree: Any) -> Any:
    """Fetch a pytree of (replicated) arrays to NumPy, also when not fully addressable."""
    leaves = jax.tree.leaves(tree)
    if all(not isinstance(x, jax.Array) or x.is_fully_addressable for x in leaves):
        return jax.tree.map(np.asarray, jax.device_get(tree))  # one batched transfer

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    return jax.tree.map(one, tree)


def agree(error: BaseException | None) -> None:
    """Raise ``error`` on the main process, and an error on every other process too, when the
    main process found one (a check only it can make: it alone reads and writes the run
    directory). A no-op in a one-process run but for raising ``error``."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        flag = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
        if int(flag) and error is None:
            raise RuntimeError("process 0 stopped with an error before the run (see its output).")
    if error is not None:
        raise error


def _flatten(x, prefix=""):
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(x, list):
        return {f"{prefix}{i}": v for i, v in enumerate(x)} | {f"{prefix}len": len(x)}
    return {prefix.rstrip("."): x}


def check_same_on_all_processes(what: str, obj: Any) -> None:
    """:class:`ValueError` on every process, naming the first difference, unless every process
    of a multi-process run holds the same ``obj`` (a JSON-able command line or config): processes
    launched with different commands would otherwise meet in mismatched collectives and abort
    without saying why. A no-op in a one-process run."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    mine = json.loads(json.dumps(obj, sort_keys=True, default=str))
    data = np.frombuffer(json.dumps(mine, sort_keys=True).encode(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.int32(data.size)))
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    rows = np.asarray(multihost_utils.process_allgather(padded))
    first = json.loads(bytes(rows[0][: sizes[0]]).decode())
    for i in range(1, len(sizes)):
        other = json.loads(bytes(rows[i][: sizes[i]]).decode())
        if other != first:
            a, b = _flatten(first), _flatten(other)
            key = next(k for k in sorted({*a, *b}) if a.get(k, "<absent>") != b.get(k, "<absent>"))
            where = f"argument {int(key) + 1}" if isinstance(first, list) and key.isdigit() else key
            raise ValueError(
                f"process {i} was given a different {what} than process 0: {where or 'it'} is "
                f"{b.get(key, '<absent>')!r} there and {a.get(key, '<absent>')!r} on process 0; "
                "launch every process with the same command."
            )


def from_main(value: int) -> int:
    """The main process's ``value`` on every process (a decision only it can make)."""
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int64(value)))


def json_from_main(value):
    """The main process's JSON-serializable ``value`` on every process (what only it has read,
    such as a file that only it writes: other hosts may not see that file at all)."""
    if jax.process_count() == 1:
        return value
    import json

    from jax.experimental import multihost_utils

    data = json.dumps(value).encode() if is_main_process() else b""
    n = from_main(len(data))
    buf = np.zeros(n, np.uint8)
    if is_main_process():
        buf[:] = np.frombuffer(data, np.uint8)
    buf = np.asarray(multihost_utils.broadcast_one_to_all(buf))
    return json.loads(buf.tobytes().decode())


def is_main_process() -> bool:
    """Only process 0 writes files in a multi-host run."""
    return jax.process_index() == 0
