"""Run the notebooks headlessly with papermill, render HTML, collect metrics into `reports/`.

Layout written under `out`:
    <stem>.html               the executed notebook rendered (code folded into the page, no prompts)
    <stem>/                   the notebook's OUTPUT_DIR: metrics.json, figures, predictions
    executed/<stem>.ipynb     the executed notebook itself
    metrics.json              per notebook: status, parameters, metrics, versions, commit, wall time
    index.html                links to every report with its status
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .provenance import provenance

KERNEL_NAME = "mmduet"


@dataclass
class NotebookRun:
    """The outcome of one notebook in a `make reports` run."""

    notebook: str
    status: str  # "ok" | "failed"
    wall_time_s: float
    parameters: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    html: str | None = None
    error: dict | None = None


def save_metrics(output_dir: str | Path, metrics: dict, parameters: dict | None = None) -> Path:
    """Write `metrics.json` (metrics, parameters, provenance) into a notebook's OUTPUT_DIR."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "metrics.json"
    record = {"metrics": metrics, "parameters": parameters or {}, **provenance()}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def load_metrics(output_dir: str | Path) -> dict:
    """Read back what `save_metrics` wrote (the `metrics` part)."""
    return json.loads((Path(output_dir) / "metrics.json").read_text())["metrics"]


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def _inline_figures():
    """The kernel inherits this process's environment: an MPLBACKEND such as Agg (set for headless tests) would
    leave every plt.show() in the report empty. Kernels get the inline backend; the variable is restored after."""
    saved = os.environ.pop("MPLBACKEND", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MPLBACKEND"] = saved


def _failing_cell(exc: Exception) -> dict:
    info = {"ename": getattr(exc, "ename", type(exc).__name__),
            "evalue": str(getattr(exc, "evalue", exc))[:2000]}
    if getattr(exc, "exec_count", None) is not None:
        info["cell_execution_count"] = exc.exec_count
    if getattr(exc, "cell_index", None) is not None:
        info["cell_index"] = exc.cell_index
    return info


def render_html(executed: Path, html_path: Path) -> None:
    """Executed notebook -> standalone HTML (inputs kept; the reader sees what ran)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed, as_version=4)
    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nb)
    html_path.write_text(body)


def run_notebook(notebook: Path, out: Path, parameters: dict | None = None,
                 kernel_name: str = KERNEL_NAME) -> NotebookRun:
    """Execute one notebook with papermill into `out`; never raises for a failing cell."""
    import papermill

    stem = notebook.stem
    output_dir = out / stem
    output_dir.mkdir(parents=True, exist_ok=True)
    executed = out / "executed" / f"{stem}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    params = {"OUTPUT_DIR": str(Path(os.path.relpath(output_dir, notebook.parent)))}
    if "INTERACTIVE" in papermill.inspect_notebook(str(notebook)):
        params["INTERACTIVE"] = False  # widgets need a live kernel; the report shows the static figures
    params.update(parameters or {})
    started = time.perf_counter()
    error = None
    try:
        with _inline_figures():
            papermill.execute_notebook(str(notebook), str(executed), parameters=params,
                                       kernel_name=kernel_name, cwd=str(notebook.parent),
                                       progress_bar=False, log_output=False)
    except papermill.PapermillExecutionError as exc:
        error = _failing_cell(exc)
    wall = time.perf_counter() - started
    html_name = None
    if executed.exists():
        render_html(executed, out / f"{stem}.html")
        html_name = f"{stem}.html"
    metrics_file = output_dir / "metrics.json"
    recorded = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    return NotebookRun(notebook=notebook.name, status="failed" if error else "ok", wall_time_s=round(wall, 2),
                       parameters=recorded.get("parameters", params), metrics=recorded.get("metrics", {}),
                       html=html_name, error=error)


def run_reports(notebook_dir: str | Path = "notebooks", out: str | Path = "reports",
                only: list[str] | None = None, parameters: dict | None = None,
                kernel_name: str = KERNEL_NAME) -> dict:
    """Run every notebook in order (a failure does not stop the others); write metrics.json and index.html."""
    notebook_dir, out = Path(notebook_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    notebooks = sorted(notebook_dir.glob("*.ipynb"))
    if only:
        notebooks = [nb for nb in notebooks if any(key in nb.stem for key in only)]
    if not notebooks:
        raise FileNotFoundError(f"no notebooks found in {notebook_dir}")
    runs = []
    for nb in notebooks:
        run = run_notebook(nb, out, parameters, kernel_name)
        print(f"[{run.status:>6}] {nb.name}  {run.wall_time_s:.1f}s"
              + (f"  failing cell {run.error.get('cell_execution_count')}: {run.error['ename']}: "
                 f"{run.error['evalue'][:200]}" if run.error else ""), flush=True)
        runs.append(run)
    previous = {}
    if only and (out / "metrics.json").exists():  # a partial rerun keeps the other notebooks' entries
        previous = json.loads((out / "metrics.json").read_text()).get("notebooks", {})
    entries = {**previous, **{Path(r.notebook).stem: asdict(r) for r in runs}}
    summary = {"notebooks": dict(sorted(entries.items())), **provenance()}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    (out / "index.html").write_text(_index_html([NotebookRun(**v) for v in summary["notebooks"].values()], summary))
    return summary


def _index_html(runs: list[NotebookRun], summary: dict) -> str:
    rows = []
    for r in runs:
        link = f'<a href="{html.escape(r.html)}">{html.escape(r.notebook)}</a>' if r.html else html.escape(r.notebook)
        status = "ok" if r.status == "ok" else f"failed ({html.escape(r.error['ename'])})"
        rows.append(f"<tr><td>{link}</td><td>{status}</td><td>{r.wall_time_s:.1f} s</td>"
                    f"<td>{len(r.metrics)}</td></tr>")
    commit = html.escape(str(summary.get("git_commit")))
    return ("<!doctype html><html><head><meta charset='utf-8'><title>mmduet reports</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 12px;text-align:left}</style>"
            "</head><body><h1>mmduet reports</h1>"
            f"<p>commit {commit}; metrics of every notebook in <a href='metrics.json'>metrics.json</a>.</p>"
            "<table><tr><th>notebook</th><th>status</th><th>wall time</th><th>metrics</th></tr>"
            + "".join(rows) + "</table></body></html>\n")
