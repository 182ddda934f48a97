r"""Modular arithmetic data for the grokking experiment (Power et al. 2022, arXiv:2201.02177).

Every pair :math:`(a, b) \in \mathbb Z_p^2` (for division every pair with :math:`b \ne 0`) is one
example labelled :math:`c = a \circ b \bmod p`:

==========  ==============  =========================================================
``op``      symbol          label
==========  ==============  =========================================================
``add``     :math:`+`       :math:`(a + b) \bmod p`
``sub``     :math:`-`       :math:`(a - b) \bmod p`
``mul``     :math:`\times`  :math:`a b \bmod p`
``div``     :math:`\div`    :math:`a\, b^{-1} \bmod p`, :math:`b^{-1} = b^{p-2} \bmod p`
                            (Fermat; needs ``p`` prime and :math:`b \ne 0`)
==========  ==============  =========================================================

The pairs are split once, by a ``numpy`` permutation seeded with ``split_seed``, into
``round(train_fraction · N)`` train and the rest test examples; the split does not depend on the
model seeds, so every seed and both optimizers see the same data.

Token formats (inputs are ``int32`` arrays, labels ``int32`` residues in ``[0, p)``):

- ``"pair"``: ``[a, b]``, shape ``(n, 2)``, vocabulary ``p``: the embedding-MLP input.
- ``"sequence"``: ``[a, op, b, =]``, shape ``(n, 4)``, vocabulary ``p + 2`` (token ``p`` is the
  operation, ``p + 1`` the equals sign): Power et al.'s decoder-transformer input, whose logits at
  the last position (``=``) predict ``c``. Only the answer is predicted; the readout has ``p``
  outputs.

Example:
  >>> d = make_data(p=5, op="div", train_fraction=0.5, split_seed=0)
  >>> d.n_pairs, len(d.y_train), len(d.y_test), d.vocab_size
  (20, 10, 10, 5)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

OPS = {"add": "+", "sub": "−", "mul": "×", "div": "÷"}
FORMATS = {"pair": 2, "sequence": 4}


def is_prime(p: int) -> bool:
    """Trial division (``p`` is at most a few thousand here)."""
    if p < 2:
        return False
    return all(p % d for d in range(2, int(p**0.5) + 1))


def check_task(p: int, op: str, train_fraction: float) -> None:
    """Raise ``ValueError`` with a clear message if ``(p, op, train_fraction)`` is not a task."""
    if op not in OPS:
        valid = ", ".join(f"{k} ({v})" for k, v in OPS.items())
        raise ValueError(f"unknown operation {op!r}; valid operations: {valid}.")
    if isinstance(p, bool) or not isinstance(p, int | np.integer) or p < 2:
        raise ValueError(f"the modulus p must be an integer >= 2, got {p!r}.")
    if op == "div" and not is_prime(p):
        raise ValueError(
            f"division mod p needs p prime (every b != 0 must have an inverse mod p); "
            f"{p} is not prime. Nearby primes: {_nearby_primes(p)}."
        )
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(
            f"train_fraction must lie strictly between 0 and 1, got {train_fraction!r}."
        )


def _nearby_primes(p: int) -> str:
    below = next((q for q in range(p - 1, 1, -1) if is_prime(q)), None)
    above = next(q for q in range(p + 1, 2 * p + 3) if is_prime(q))
    return ", ".join(str(q) for q in (below, above) if q is not None)


def all_pairs(p: int, op: str, b_nonzero: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Every operand pair ``(N, 2)`` and its label ``(N,)``, ``a``-major.

    ``N = p²``, or ``p(p − 1)`` for ``div`` or with ``b_nonzero`` (no ``b = 0``: Grokfast's
    reference task draws ``b`` from ``1 … p − 1`` for every operation).
    """
    check_task(p, op, 0.5)
    a, b = (g.ravel() for g in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    if op == "div" or b_nonzero:
        keep = b != 0
        a, b = a[keep], b[keep]
    if op == "add":
        c = a + b
    elif op == "sub":
        c = a - b
    elif op == "mul":
        c = a * b
    else:
        inverse = np.array([pow(int(x), p - 2, p) for x in range(p)])  # Fermat: b^(p−2) = b^(−1)
        c = a * inverse[b]
    return np.stack([a, b], axis=1).astype(np.int32), (c % p).astype(np.int32)


def tokens(pairs: np.ndarray, p: int, fmt: str) -> np.ndarray:
    """Model inputs from operand pairs ``(n, 2)``: ``[a, b]`` or ``[a, op, b, =]`` (module doc)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown token format {fmt!r}; valid: {', '.join(FORMATS)}.")
    if fmt == "pair":
        return pairs.astype(np.int32)
    n = len(pairs)
    op_tok, eq_tok = np.full(n, p), np.full(n, p + 1)
    return np.stack([pairs[:, 0], op_tok, pairs[:, 1], eq_tok], axis=1).astype(np.int32)


def vocab_size(p: int, fmt: str) -> int:
    return p if fmt == "pair" else p + 2


class ModularData(NamedTuple):
    """A split modular-arithmetic task (inputs already tokenised)."""

    x_train: np.ndarray  # (n_train, T) int32 tokens, T = 2 ("pair") or 4 ("sequence")
    y_train: np.ndarray  # (n_train,) int32 labels in [0, p)
    x_test: np.ndarray  # (n_test, T) int32
    y_test: np.ndarray  # (n_test,) int32
    p: int
    op: str
    fmt: str
    vocab_size: int  # embedding rows: p ("pair") or p + 2 ("sequence")

    @property
    def n_pairs(self) -> int:
        return len(self.y_train) + len(self.y_test)


def make_data(
    p: int = 97,
    op: str = "div",
    train_fraction: float = 0.25,
    split_seed: int = 0,
    fmt: str = "pair",
    b_nonzero: bool = False,
) -> ModularData:
    """All pairs of ``a op b mod p``, split into train/test by a seeded permutation.

    Args:
      p: the modulus (prime for ``div``).
      op: ``"add"``, ``"sub"``, ``"mul"`` or ``"div"``.
      train_fraction: share of the pairs used for training, in (0, 1); both parts must be
        non-empty after rounding.
      split_seed: seeds the permutation (``numpy.random.default_rng``); same seed, same split.
      fmt: ``"pair"`` or ``"sequence"`` token format.
      b_nonzero: leave out the pairs with ``b = 0`` (always so for ``div``).
    """
    check_task(p, op, train_fraction)
    pairs, labels = all_pairs(p, op, b_nonzero)
    n_pairs = len(labels)
    n_train = int(round(train_fraction * n_pairs))
    if not 0 < n_train < n_pairs:
        raise ValueError(
            f"train_fraction={train_fraction} leaves {n_train} of {n_pairs} pairs for training; "
            "both the train and the test set must be non-empty."
        )
    perm = np.random.default_rng(split_seed).permutation(n_pairs)
    tr, te = perm[:n_train], perm[n_train:]
    x = tokens(pairs, p, fmt)
    return ModularData(x[tr], labels[tr], x[te], labels[te], p, op, fmt, vocab_size(p, fmt))
