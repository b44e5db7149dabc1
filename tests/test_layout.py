"""The package's shape, as DESIGN.md draws it: floors that import only downwards, no cycles.

Read from the source with `ast` (every import, at module level or inside a function, counts:
a late import hides a cycle from Python, not from a reader), so the test needs no import
side effects and names the offending line.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ptxssl"
BASE = {"errors", "files", "parallel", "bootstrap", "__init__"}  # utilities every floor may use; they import no stage
STAGES = ("datasets", "encoders", "engine", "pretrain", "analysis", "transfer", "report", "demo", "cli")
# stage -> the stages it may import: a floor reads the floors below it, and a stage reads another
# stage only where it reads that stage's files (analysis embeds with a pretraining run's model)
ALLOWED = {
    "datasets": set(),
    "encoders": set(),
    "engine": {"encoders", "datasets"},
    "pretrain": {"engine", "encoders", "datasets"},
    "analysis": {"pretrain", "engine", "encoders", "datasets"},
    "transfer": {"engine", "encoders", "datasets"},
    "report": {"pretrain", "analysis", "transfer", "engine", "encoders", "datasets"},
    "demo": set(STAGES) - {"demo", "cli"},
    "cli": set(STAGES) - {"cli"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """(ptxssl module imported, line) for every import statement in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("ptxssl")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ptxssl") and not node.level:
            for a in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{node.module}.{a.name}"
                found.append((sub if sub in known else node.module, node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; use absolute ptxssl.* imports")
    return found


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph() -> dict[str, list[tuple[str, int]]]:
    known = modules()
    return {m: [(t, line) for t, line in imports(p, known) if t != m] for m, p in known.items()}


def test_the_scan_sees_the_package():
    g = graph()
    assert {"ptxssl.encoders.inits", "ptxssl.transfer.run", "ptxssl.cli"} <= g.keys()
    assert "ptxssl.encoders.build" in {t for t, _ in g["ptxssl.encoders.inits"]}


def test_no_import_cycles():
    g = {m: sorted({t for t, _ in edges if t in modules()}) for m, edges in graph().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in g:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("floor", STAGES)
def test_each_stage_imports_only_the_floors_below_it(floor):
    bad = set()
    for module, edges in graph().items():
        if stage(module) != floor:
            continue
        for target, line in edges:
            to = stage(target)
            if to != floor and to not in BASE and to not in ALLOWED[floor]:
                bad.add(f"{module}:{line} imports {target}")
    assert not bad, "\n".join(sorted(bad))


def test_base_utilities_import_no_stage():
    bad = [f"{m}:{line} imports {t}" for m, edges in graph().items() if stage(m) in BASE
           for t, line in edges if stage(t) not in BASE]
    assert not bad, "\n".join(bad)


def test_every_module_belongs_to_a_known_floor():
    assert {stage(m) for m in modules()} <= set(STAGES) | BASE


def test_importing_every_module_leaves_the_backend_warnings_and_loggers_alone():
    """A notebook that imports ptxssl keeps its matplotlib backend, warning filters and logging."""
    import subprocess
    import sys

    code = """
import importlib, logging, pkgutil, warnings, matplotlib
matplotlib.use("svg")
# the libraries ptxssl builds on first: some install warning filters of their own on import
for lib in ("torch", "torchvision", "pytorch_lightning", "lightly", "segmentation_models_pytorch", "sklearn",
            "scipy", "skimage", "h5py", "pydicom", "pandas", "click", "tqdm", "safetensors", "yaml"):
    importlib.import_module(lib)
before = (list(warnings.filters), [(n, list(l.filters)) for n, l in logging.root.manager.loggerDict.items()
                                   if isinstance(l, logging.Logger)])
import ptxssl
names = sorted(m.name for m in pkgutil.walk_packages(ptxssl.__path__, "ptxssl.") if not m.name.endswith("__main__"))
for name in names:
    importlib.import_module(name)
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert list(warnings.filters) == before[0], [f for f in warnings.filters if f not in before[0]][:3]
added = [n for n, l in logging.root.manager.loggerDict.items() if isinstance(l, logging.Logger) and l.filters
         and (n, list(l.filters)) not in before[1]]
assert not added, added
print(len(names))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) > 70  # every module was imported
