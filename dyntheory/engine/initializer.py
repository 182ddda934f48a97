"""The members' initial parameters as one program, shared by the trainers that start alike.

A :class:`~dyntheory.engine.Trainer` with an ``init_params`` function builds each member's params
from the first half of its key (the second half drives its batches). The params depend on
neither the optimizer nor the grid, so every optimizer of a comparison starts from the same
program: :func:`initializer` jits it once per ``init_params`` function and layout in this
process, and the persistent compilation cache shares it across processes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import jax
from jax import lax

KEEP = 4  # jitted initializers kept (the most recently used)
_JITTED: OrderedDict = OrderedDict()


def initializer(init_params: Callable, seeded: bool, shardings=None) -> Callable:
    """``keys -> params``: each member's ``init_params`` of the first half of its key, mapped
    over the members (``keys`` ``(M,)``) when ``seeded``, else of one key.

    The members run one after another (``lax.map``): the same numbers as ``vmap``, for a fraction
    of its compile time, and an initializer runs once. With ``shardings`` (the params' layout) the
    function is jitted with them as ``out_shardings``, once per ``init_params`` function and
    layout (the last :data:`KEEP` are kept); without, it is returned plain (for
    :func:`jax.eval_shape`).
    """
    one = lambda k: init_params(jax.random.split(k)[0])
    fn = (lambda keys: lax.map(one, keys)) if seeded else one
    if shardings is None:
        return fn
    leaves, tree = jax.tree.flatten(shardings)
    key = (init_params, seeded, tree, tuple(leaves))
    if key not in _JITTED:
        _JITTED[key] = jax.jit(fn, out_shardings=shardings)
        while len(_JITTED) > KEEP:
            _JITTED.popitem(last=False)
    _JITTED.move_to_end(key)
    return _JITTED[key]
