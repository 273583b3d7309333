"""The package's shape: a core (model, stream, video, data, evaluation) that imports nothing above it, layers
that import only downward, no import cycles, and a core that stays free of notebook and widget machinery."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mmduet_core"

# Lower layers first; a module may import from its own layer or any lower one, never a higher one.
LAYERS = [
    {"errors", "__init__", "__version__"},
    {"model", "video", "stream", "data", "evaluation"},  # the core
    {"run", "runner", "training", "toyworld"},
    {"plots"},
    {"interactive", "reports"},
    {"tools", "checkpoint"},  # `checkpoint` is the old path of model.checkpoint, kept for existing code
    {"cli", "__main__"},
]
CORE = ("model", "stream", "video", "data", "evaluation")
HEAVY = ("ipywidgets", "papermill", "jupyterlab", "nbconvert", "matplotlib", "IPython")


def _top(module: str) -> str:
    return module.split(".")[0]


def _layer(top: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if top in names)


def _imports() -> dict[str, set[str]]:
    """{module path relative to the package: mmduet_core modules it imports (dotted, relative to the package)}."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
        package = parts if rel.name == "__init__" else parts[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - node.level + 1] if node.level > 1 else package
                    target = ".".join(base + ([node.module] if node.module else []))
                elif node.module and node.module.startswith("mmduet_core"):
                    target = node.module.removeprefix("mmduet_core").lstrip(".")
                else:
                    continue
                if target:
                    found.add(target)
                else:  # `from . import x`
                    found |= {alias.name for alias in node.names}
        graph[".".join(parts) or "__init__"] = found
    return graph


def test_every_module_has_a_layer():
    tops = {_top(m) for m in _imports() if m != "__init__"}
    unknown = [t for t in tops if not any(t in names for names in LAYERS)]
    assert not unknown, f"modules without a layer: {unknown}"


def test_nothing_imports_upward():
    upward = []
    for module, targets in _imports().items():
        if module == "__init__":
            continue
        for target in targets:
            if _layer(_top(target)) > _layer(_top(module)):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(sorted(upward))


def test_core_packages_do_not_import_each_other_in_a_cycle():
    graph = {m: {t for t in ts} for m, ts in _imports().items()}
    tops: dict[str, set[str]] = {}
    for module, targets in graph.items():
        tops.setdefault(_top(module), set()).update(_top(t) for t in targets if _top(t) != _top(module))

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in tops.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(t for t in tops if reaches(t, t, {t}))
    assert not cycles, f"top-level modules in an import cycle: {cycles}"


def test_core_imports_no_notebook_or_widget_machinery():
    """The core and the runner together (so each of them alone) pull in no notebook, widget or plotting library."""
    modules = ("mmduet_core.model", "mmduet_core.stream", "mmduet_core.evaluation.grounding", "mmduet_core.runner")
    code = (f"import sys, {', '.join(modules)}; from mmduet_core.stream import DuetSession; "
            f"from mmduet_core.model import load_model; print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"the core pulls in {out.stdout.strip()}"


def test_settings_and_policy_import_without_torch():
    """The command line builds its options from the settings: that must not cost a torch import."""
    code = "import sys, mmduet_core.stream.settings, mmduet_core.stream.policy; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
