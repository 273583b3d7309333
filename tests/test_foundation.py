"""The project's own hygiene: notebooks, environment files, the command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

from .conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
VENV_BIN = Path(sys.executable).parent


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ is empty"


def test_notebooks_are_stripped():
    """nbstripout itself checks every notebook (one process for all: each start costs seconds)."""
    nbstripout = VENV_BIN / "nbstripout"
    result = subprocess.run([str(nbstripout), "--verify", *map(str, NOTEBOOKS)], capture_output=True, text=True)
    assert result.returncode == 0, f"outputs or execution metadata: {result.stdout}{result.stderr} (run `make format`)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_one_parameters_cell_of_typed_commented_literals(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters'"
    for line in tagged[0].source.splitlines():
        if not line.strip():
            continue
        assert re.match(r"^[A-Z][A-Z0-9_]*: [\w\[\], |]+ = .+  # .+", line), f"{path.name}: untyped or uncommented: {line}"
    assert nb.metadata["kernelspec"]["name"] == "mmduet"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_no_path_hacks_or_installs(path):
    text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert "sys.path" not in text and "pip install" not in text


def _code_cells(path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_one_title_and_defines_no_functions(path):
    """One H1 (the notebook's title), and no function or class defined in a code cell: logic lives in the package,
    notebooks only call it."""
    import ast

    nb = nbformat.read(path, as_version=4)
    titles = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
              if line.startswith("# ")]
    assert len(titles) == 1, f"{path.name}: {len(titles)} H1 titles"
    for source in _code_cells(path):
        defined = [type(n).__name__ for n in ast.walk(ast.parse(source))
                   if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef)]
        assert not defined, f"{path.name}: {defined} in a code cell:\n{source[:300]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_records_its_parameters_as_run(path):
    """The setup cell, the first code cell after the parameters, captures the parameters papermill ran the notebook
    with (`notebook_setup(globals())` or `benchmark_setup(globals(), ...)`), and no cell retypes them for
    `save_metrics` by hand."""
    nb = nbformat.read(path, as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    setup = next(c.source for c in nb.cells[index + 1:] if c.cell_type == "code")
    assert re.search(r"\b(notebook|benchmark)_setup\(globals\(\)", setup), f"{path.name}: setup cell does not capture"
    for source in _code_cells(path):
        assert not re.search(r"save_metrics\([^)]*\{\s*\"[A-Z_]+\"\s*:", source), f"{path.name}: parameters retyped"


def _requirement_name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_installs_the_project_and_pins_nothing_twice():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert any(re.fullmatch(r"-e \.(\[[\w,]+\])?", p) for p in pip), "pip section must install this project"
    assert len(pip) == 1, "Python packages belong in pyproject.toml, not in environment.yml"
    python_deps = {_requirement_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        python_deps |= {_requirement_name(r) for r in extra}
    conda_names = {re.split(r"[=<> ]", d)[0].lower() for d in conda}
    assert not (conda_names - {"python", "pip"}) & python_deps, "listed in both environment.yml and pyproject"
    assert {"python", "pip", "openjdk", "ffmpeg"} <= conda_names


def test_cli_version_and_help():
    out = subprocess.run([sys.executable, "-m", "mmduet_core", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("mmduet ")
    out = subprocess.run([sys.executable, "-m", "mmduet_core", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "doctor" in out.stdout


def test_kernel_named_mmduet_imports_the_package():
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("mmduet")
    python = spec.argv[0]
    out = subprocess.run([python, "-c", "import mmduet_core, json; print(json.dumps(mmduet_core.__file__))"],
                         capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert Path(json.loads(out.stdout)).resolve().is_relative_to(ROOT)


def test_java_major_parsing():
    from mmduet_core.tools.doctor import java_major

    assert java_major('openjdk version "17.0.15" 2025-04-15') == 17
    assert java_major('java version "1.8.0_392"') == 8
    assert java_major(None) is None


def test_readme_usage_example_runs(tmp_path):
    """The first Python block under "Using the package" runs as written (from the repository root)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Using the package"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    script = tmp_path / "usage.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "load" in code and "push_frames" in code


def test_no_dead_code(tmp_path):
    """vulture finds nothing unused in the package, counting what the tests and the notebooks' code cells use
    (names only frameworks use are listed in tests/vulture_whitelist.py)."""
    for path in NOTEBOOKS:
        code = "\n\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        (tmp_path / f"nb_{path.stem}.py").write_text(code)
    out = subprocess.run([str(VENV_BIN / "vulture"), str(ROOT / "mmduet_core"), str(ROOT / "tests"), str(tmp_path),
                          "--min-confidence", "60", "--exclude", "tests/fixtures"],
                         capture_output=True, text=True)
    unused = [line for line in out.stdout.splitlines() if line.startswith(str(ROOT / "mmduet_core"))
              or line.startswith("mmduet_core")]
    assert not unused, "unused code:\n" + "\n".join(unused)


def test_ruff_is_clean():
    """The style and import checks `make lint` runs, over the package, the tests and the notebooks."""
    out = subprocess.run([str(VENV_BIN / "ruff"), "check", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:]
