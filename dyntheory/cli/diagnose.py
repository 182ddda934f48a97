"""``dyntheory diagnose``: trainability diagnostics at initialization from the command line.

    dyntheory diagnose --model mlp --depth 8 --width 64 --activation tanh [--norm layernorm]
                       [--residual] [--n 128] [--overfit-steps 500] [--out DIR]
    dyntheory diagnose --model mlp --depth 16 --compare activation=relu,gelu,tanh,sigmoid
    dyntheory diagnose --model transformer --depth 2 --compare depth=1,2,4

Builds a model of the zoo and a synthetic batch (Gaussian inputs with a random tanh teacher's
standardized outputs as regression targets or arg-max class labels; random tokens with
``sum mod p`` labels for the token models), or reads ``--data FILE.npz`` (arrays ``x``, ``y``),
runs :func:`dyntheory.diagnostics.report.diagnose`, prints the table and writes
``DIR/diagnostics.json``. ``--compare KEY=V1,V2,...`` repeats it for each value of one model flag,
prints a comparison table and draws ``DIR/compare.png``.

:func:`add_arguments` and :func:`handler` plug into ``dyntheory.cli``; :func:`main` is the
stand-alone entry ``main(argv) -> int``. Module-level imports are light; JAX loads in the handler.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

MODELS = ("mlp", "cnn", "transformer", "embed_mlp")
COMPARABLE = (
    "model",
    "depth",
    "width",
    "activation",
    "norm",
    "residual",
    "beta",
    "n",
    "seed",
    "loss",
)


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean (true/false), got {text!r}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``diagnose`` flags."""
    m = p.add_argument_group("model")
    m.add_argument("--model", choices=MODELS, default="mlp")
    m.add_argument("--depth", type=int, default=4, help="hidden layers / conv stages / blocks")
    m.add_argument("--width", type=int, default=64, help="hidden width / channels / model width")
    m.add_argument("--activation", default="relu", help="any name of dyntheory.models.ACTIVATIONS")
    m.add_argument("--norm", default=None, help="none, layernorm or dyt (default: the model's)")
    m.add_argument("--residual", action="store_true", help="MLP skip connections")
    m.add_argument("--beta", type=float, default=1.0, help="swish beta")
    m.add_argument("--heads", type=int, default=4, help="transformer attention heads")
    m.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    d = p.add_argument_group("data")
    d.add_argument("--n", type=int, default=128, help="batch size (examples)")
    d.add_argument("--d-in", type=int, default=16, help="MLP input size")
    d.add_argument(
        "--out-features",
        type=int,
        default=None,
        help="outputs p (default 1 for squared loss, 10 classes / vocab for CE)",
    )
    d.add_argument("--image-size", type=int, default=8, help="CNN input height = width")
    d.add_argument("--channels", type=int, default=3, help="CNN input channels")
    d.add_argument("--vocab", type=int, default=17, help="token models' vocabulary")
    d.add_argument("--seq-len", type=int, default=4, help="transformer sequence length")
    d.add_argument(
        "--loss",
        choices=("squared", "softmax_ce"),
        default=None,
        help="default: squared for mlp/cnn, softmax_ce for token models",
    )
    d.add_argument("--data", default=None, help=".npz file with arrays x and y instead")
    d.add_argument("--seed", type=int, default=0, help="model init seed")
    d.add_argument("--data-seed", type=int, default=1234)
    r = p.add_argument_group("diagnostics")
    r.add_argument("--overfit-steps", type=int, default=500)
    r.add_argument("--no-overfit", action="store_true", help="skip the one-batch overfit test")
    r.add_argument("--overfit-optimizer", choices=("gd", "adam"), default="gd")
    r.add_argument(
        "--overfit-lr",
        type=float,
        default=None,
        help="default: half the suggested max lr (gd), 1e-3 (adam)",
    )
    r.add_argument(
        "--overfit-tol",
        type=float,
        default=1e-3,
        help="fit once the loss is below tol x its initial value",
    )
    r.add_argument("--power-iters", type=int, default=50)
    r.add_argument("--ntk-implementation", default="jacobian")
    r.add_argument(
        "--compare",
        default=None,
        metavar="KEY=V1,V2,...",
        help=f"run once per value of one flag: {', '.join(COMPARABLE)}",
    )
    r.add_argument("--out", default="runs/diagnose", help="output directory")
    r.add_argument("--quiet", action="store_true", help="print only the comparison table")


# ----------------------------------------------------------------------------- model + data


def _norm(args) -> str | None:
    if args.norm is None:
        return "layernorm" if args.model == "transformer" else None
    return None if args.norm.lower() == "none" else args.norm


def build(args) -> tuple[Any, Any, Any, Any, str]:
    """``(apply_fn, params, x, y, loss)`` from the flags."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from dyntheory import models

    for name in (
        "depth",
        "width",
        "n",
        "heads",
        "d_in",
        "image_size",
        "channels",
        "vocab",
        "seq_len",
    ):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    models.get_activation(args.activation, beta=args.beta)  # a clear error for a bad name
    tokens = args.model in ("transformer", "embed_mlp")
    loss = args.loss or ("softmax_ce" if tokens else "squared")
    p = args.out_features or (1 if loss == "squared" else (args.vocab if tokens else 10))
    if loss == "softmax_ce" and p < 2:
        raise ValueError(f"softmax_ce needs at least 2 classes, got --out-features {p}")
    if args.model in ("cnn", "transformer") and args.residual:
        raise ValueError(f"--residual applies to mlp/embed_mlp only, not {args.model}")
    if args.model == "cnn" and _norm(args) is not None:
        raise ValueError("--norm does not apply to the cnn")
    dtype = jnp.dtype(args.dtype)
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError("--dtype float64 needs jax_enable_x64")
    rngs = nnx.Rngs(args.seed)
    hidden = (args.width,) * args.depth
    common = {"activation": args.activation, "beta": args.beta, "dtype": dtype, "rngs": rngs}
    kx, kt = jax.random.split(jax.random.key(args.data_seed))
    if args.model == "mlp":
        model = models.MLP(args.d_in, hidden, p, norm=_norm(args), residual=args.residual, **common)
        shape = (args.n, args.d_in)
    elif args.model == "cnn":
        model = models.CNN(args.channels, p, channels=hidden, **common)
        shape = (args.n, args.image_size, args.image_size, args.channels)
    elif args.model == "transformer":
        model = models.Transformer(
            args.vocab,
            args.seq_len,
            p,
            width=args.width,
            depth=args.depth,
            heads=args.heads,
            norm=_norm(args),
            **common,
        )
        shape = (args.n, args.seq_len)
    else:
        model = models.EmbedMLP(
            args.vocab,
            p,
            embed_dim=args.width,
            hidden=hidden,
            norm=_norm(args),
            residual=args.residual,
            **common,
        )
        shape = (args.n, 2)
    apply_fn, params = models.functional(model)
    if args.data:
        path = Path(args.data)
        if not path.is_file():
            raise FileNotFoundError(f"--data {str(path)!r} does not exist")
        with np.load(path) as z:
            if "x" not in z or "y" not in z:
                raise ValueError(f"{path} must hold arrays 'x' and 'y', has {list(z)}")
            x, y = jnp.asarray(z["x"]), jnp.asarray(z["y"])
        if jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(dtype)
        if loss == "squared":
            y = y.astype(dtype)
        return apply_fn, params, x, y, loss
    if tokens:
        x = jax.random.randint(kx, shape, 0, args.vocab, jnp.int32)
        if loss == "softmax_ce":
            return apply_fn, params, x, jnp.sum(x, axis=1) % p, loss
        return apply_fn, params, x, jax.random.normal(kt, (args.n, p), dtype), loss
    x = jax.random.normal(kx, shape, dtype)
    flat = x.reshape(args.n, -1)
    teacher = models.MLP(flat.shape[1], (32,), p, activation="tanh", dtype=dtype, rngs=nnx.Rngs(kt))
    t = teacher(flat)
    if loss == "softmax_ce":
        return apply_fn, params, x, jnp.argmax(t, axis=1).astype(jnp.int32), loss
    t = (t - jnp.mean(t, 0, keepdims=True)) / jnp.std(t, 0, keepdims=True)
    return apply_fn, params, x, t.astype(dtype), loss


def _activation_for(args) -> str | None:
    return None if args.model == "cnn" else args.activation  # cnn convs carry no taps


def compare_specs(args) -> list[tuple[str, argparse.Namespace]]:
    """``[(label, args)]``: one entry, or one per value of ``--compare KEY=V1,V2,...``."""
    if not args.compare:
        return [(args.model, args)]
    key, sep, values = args.compare.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not values.strip():
        raise ValueError(f"--compare must look like KEY=V1,V2,..., got {args.compare!r}")
    if key not in COMPARABLE:
        raise ValueError(f"--compare cannot vary {key!r}; choose one of {', '.join(COMPARABLE)}")
    parse = {
        "depth": int,
        "width": int,
        "n": int,
        "seed": int,
        "beta": float,
        "residual": _bool,
    }.get(key, str)
    out = []
    for text in (v.strip() for v in values.split(",")):
        if not text:
            raise ValueError(f"--compare has an empty value in {args.compare!r}")
        try:
            value = parse(text)
        except ValueError as e:
            raise ValueError(f"--compare {key}: cannot parse {text!r} ({e})") from None
        spec = copy.copy(args)
        setattr(spec, key, value)
        out.append((f"{key}={text}", spec))
    return out


# ----------------------------------------------------------------------------- entry points


def handler(args: argparse.Namespace) -> int:
    """Run the diagnostics for the parsed ``args``; print tables, write JSON (and the figure)."""
    from dyntheory.diagnostics.format import draw_comparison, format_comparison, format_report
    from dyntheory.diagnostics.report import diagnose
    from dyntheory.engine import rundir

    for name in ("overfit_steps", "power_iters"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    specs = compare_specs(args)
    out = rundir.RunDir(args.out)
    reports = {}
    for label, spec in specs:
        apply_fn, params, x, y, loss = build(spec)
        rep = diagnose(
            apply_fn,
            params,
            x,
            y,
            loss=loss,
            activation=_activation_for(spec),
            beta=spec.beta,
            power_iters=spec.power_iters,
            ntk_implementation=spec.ntk_implementation,
            overfit_steps=spec.overfit_steps,
            overfit_optimizer=spec.overfit_optimizer,
            overfit_lr=spec.overfit_lr,
            overfit_tol=spec.overfit_tol,
            run_overfit=not spec.no_overfit,
        )
        rep["spec"] = {k: v for k, v in vars(spec).items() if k not in ("compare", "out")}
        reports[label] = rep
        if not args.quiet:
            print(format_report(rep, label), end="\n\n")
    if args.compare:
        print(format_comparison(reports))
        draw_comparison(reports, out.file("compare.png"))
        rundir.write_json(
            out.file("diagnostics.json"), {"compare": args.compare, "reports": reports}
        )
        print(f"wrote {out.file('diagnostics.json')} and {out.file('compare.png')}")
    else:
        rundir.write_json(out.file("diagnostics.json"), next(iter(reports.values())))
        print(f"wrote {out.file('diagnostics.json')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dyntheory diagnose", description="trainability diagnostics at initialization"
    )
    add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: parse ``argv``, run :func:`handler`; bad inputs exit with status 2."""
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 spectra; models stay float32
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return handler(args)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"dyntheory diagnose: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
