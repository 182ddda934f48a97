"""The shape of the repository: layers, import graph, plug-ins, THEORY.md references, README code.

Static checks over the source (``ast``), so they hold for every import, including the ones inside
functions.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import xla_flags

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dyntheory"

# Layers, lowest first: a module may import its own layer and the ones below it.
LAYERS = {
    "theory": 0,  # dyntheory.<module>, models, optim, diagnostics, _compat
    "probes": 1,
    "engine": 2,
    "cli": 3,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module ``path`` imports (absolute names), anywhere in the file."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno))
            out += [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
    return out


def _library_graph() -> dict[str, set[str]]:
    """Module -> the library modules it imports. ``from pkg import sub`` is an edge to ``sub``
    (not to ``pkg``) when ``sub`` is a module; ``from pkg import name`` an edge to ``pkg``."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = {f"{node.module}.{a.name}" for a in node.names}
                deps |= subs & set(modules)
                if not subs <= set(modules):
                    deps.add(node.module)
        graph[name] = {m for m in deps if m in modules and m != name}
    return graph


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def test_no_import_cycle_in_the_library():
    graph = _library_graph()
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_imports_point_down_the_layers():
    bad = []
    for module, deps in _library_graph().items():
        for dep in deps:
            if dep == "dyntheory" or module == "dyntheory":
                continue  # the package's curated names
            if _layer(dep) > _layer(module):
                bad.append(f"{module} imports {dep}")
    assert not bad, "imports that point up a layer:\n" + "\n".join(sorted(bad))


@pytest.mark.parametrize("root, banned", [("dyntheory", ("experiments", "paper_figures")),
                                          ("paper_figures", ("experiments",))])  # fmt: skip
def test_library_and_figures_never_name_experiments(root, banned):
    bad = []
    for path in (ROOT / root).rglob("*.py"):
        text = path.read_text()
        for module, line in _imports(path):
            if module.split(".")[0] in banned:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
        if "_compat" in path.parts:  # the one shim that patches neural-tangents on import
            continue
        if path == PACKAGE / "cli" / "loading.py":  # imports the module the user names
            continue
        if path == PACKAGE / "lazy.py":  # loads a package's own submodules on first access
            continue
        for match in re.finditer(r"import_module\(|__import__\(", text):
            bad.append(f"{path.relative_to(ROOT)}: loads a module by name ({match.group()})")
    assert not bad, "\n".join(bad)


def test_no_private_name_is_imported_across_modules():
    bad = []
    for root in ("dyntheory", "experiments", "paper_figures"):
        for path in (ROOT / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dyntheory"):
                    names = [a.name for a in node.names]
                    private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                    if private and node.module != "dyntheory":
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {private}")
    assert not bad, "\n".join(bad)


def test_experiments_copy_no_library_probe():
    """An experiment may define a probe of its own (``class X(Probe)``), but never subclass a
    library probe or redefine one under its name: a library probe's bug is fixed in the library."""
    import dyntheory.probes as library

    names = [n for n in library.__all__ if isinstance(getattr(library, n), type)]
    names = [n for n in names if issubclass(getattr(library, n), library.Probe) and n != "Probe"]
    bases = "|".join(names)
    pattern = re.compile(rf"class (?:\w+\((?:\w+\.)*(?:{bases})\)|(?:{bases})\b)")
    hits = []
    for root in (ROOT / "experiments", ROOT / "docs" / "examples"):
        for p in root.rglob("*.py"):
            hits += [f"{p.relative_to(ROOT)}: {m.group()}" for m in pattern.finditer(p.read_text())]
    assert not hits, f"library probes copied or subclassed outside the library: {hits}"


def test_experiments_and_figures_are_entry_points():
    from importlib.metadata import entry_points

    registered = {ep.name: ep.value for ep in entry_points(group="dyntheory.experiments")}
    packages = sorted(
        p.parent.name for p in (ROOT / "experiments").glob("*/__init__.py") if p.parent.is_dir()
    )
    assert sorted(registered) == packages, "pyproject.toml must register every experiment"
    assert all(v == f"experiments.{k}" for k, v in registered.items())
    figures = [ep.value for ep in entry_points(group="dyntheory.figures")]
    assert figures == ["paper_figures.catalog"]


def _theory_sections() -> set[str]:
    text = (ROOT / "docs" / "THEORY.md").read_text()
    return set(re.findall(r"^## §(\d+)\.", text, flags=re.M))


def test_every_theory_reference_resolves():
    sections = _theory_sections()
    assert sections >= {str(i) for i in range(1, 11)}
    ref = re.compile(r"THEORY(?:\.md)?\s*§\s*(\d+)(?:\s*[–-]\s*(\d+))?")
    missing = []
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    for root in ("dyntheory", "experiments", "paper_figures", "tests", "benchmarks"):
        files += list((ROOT / root).rglob("*.py"))
    for path in files:
        for m in ref.finditer(path.read_text()):
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            for n in range(lo, hi + 1):
                if str(n) not in sections:
                    missing.append(f"{path.relative_to(ROOT)}: {m.group()}")
    assert not missing, "references to missing THEORY.md sections:\n" + "\n".join(missing)


def _readme_snippets() -> list[str]:
    """The Python snippets of the README and of the documentation pages."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    text = "".join(p.read_text() for p in pages)
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


# The session's compile settings (LLVM optimization level, shared compilation cache: faster
# compiles); the snippets get one device, as in a user's shell.
SPEED = {k: v for k, v in os.environ.items() if k.startswith("JAX_") and "CACHE" in k} | {
    "XLA_FLAGS": xla_flags(1)
}


def test_readme_python_snippets_run_as_printed(tmp_path):
    snippets = _readme_snippets()
    assert snippets, "neither the README nor the docs have a Python snippet"
    for i, code in enumerate(snippets):
        script = tmp_path / f"snippet{i}.py"
        script.write_text(code)
        run = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
            env={"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu", "HOME": str(tmp_path), **SPEED},
        )
        assert run.returncode == 0, (
            f"snippet {i} (README or docs) failed:\n{code}\n{run.stderr[-3000:]}"
        )


# Measured numbers live in results pages made from results.json (docs/results/), never in an
# experiment's docstrings or preset descriptions, where they go stale unchecked. Rough expected
# run times ("≈ 5 min", "under a minute") and the paper's own claims are allowed.
_TIME = re.compile(r"\b\d+(?:[.,]\d+)?\s?(?:s|min|minutes|seconds)\b")
_ROUGH = ("≈", "~", "about", "under", "–", "<", "up to")
_MEASURED = re.compile(r"\bMeasured\b|\bmeasured:|What was measured")
_NUMBER = re.compile(
    r"\b(?:acc(?:uracy|\.)?|corr(?:elation)?|PSNR|loss|error|exponent)\s*(?:of\s+|=\s*|≈\s*)?"
    r"\d*\.\d+|\b\d+(?:\.\d+)?\s?dB\b|\b\d+\.\d+×"
)
_CITED = re.compile(r"[Pp]aper|reference|report|claim|Lee et al|critique|in expectation")


def _measured_numbers(text: str) -> list[str]:
    flat = " ".join(text.split())
    hits = [
        flat[max(0, m.start() - 30) : m.end()]
        for m in _TIME.finditer(flat)
        if not any(r in flat[max(0, m.start() - 7) : m.start()] for r in _ROUGH)
    ]
    hits += [m.group() for m in _MEASURED.finditer(flat)]
    for m in _NUMBER.finditer(flat):  # the paper's own numbers are cited, not measured
        if not _CITED.search(flat[max(0, m.start() - 250) : m.start()]):
            hits.append(m.group())
    return hits


def test_no_measured_number_in_experiment_docstrings_or_help():
    bad = []
    for path in sorted((ROOT / "experiments").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                bad += [
                    f"{path.relative_to(ROOT)}:{node.lineno}: {h}"
                    for h in _measured_numbers(node.value)
                ]
    assert not bad, "measured numbers belong in docs/results/ (dyntheory report):\n" + "\n".join(
        bad
    )


def test_the_measured_number_check_catches_what_it_should():
    assert _measured_numbers("dyntheory run dpo --preset quick    # 4 min 56 s on a CPU")
    assert _measured_numbers("Measured: clean reward accuracy 0.712 (AdamW)")
    assert _measured_numbers("final 20.4 dB") and _measured_numbers("a speed-up of 0.94× here")
    assert not _measured_numbers("quick: ≈ 5 min on a CPU; 25 % of the pairs, lr 1e-3")
    assert not _measured_numbers("the paper reports 0.566 accuracy and 3.05× less drift")
