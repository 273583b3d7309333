"""Notebooks: run them headlessly with papermill, render HTML, collect metrics into `reports/`; and, inside a
notebook, the one-call setup (`notebook_setup`, `benchmark_setup`) that captures its parameters, prepares its data
and records its metrics with them (`save_metrics`).

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
import io
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..stream.settings import DuetSettings
from .paper import BENCHMARKS, comparison_line
from .provenance import provenance, provenance_line
from .runs import TOY_DATA, RunInfo, is_toy_world, model_name

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


# ---- inside a notebook: its parameters, its setup, its metrics ---------------------------------------------

_PARAMETER = re.compile(r"[A-Z][A-Z0-9_]*")


def notebook_parameters(namespace: dict) -> dict:
    """The notebook's parameters as they stand: every UPPER_CASE name bound to a plain value (str, int, float,
    bool, None), i.e. the parameters cell's defaults with papermill's injected values applied. Call it first thing
    after the parameters cell, with `globals()`, before any other UPPER_CASE name is bound."""
    return {k: v for k, v in namespace.items()
            if _PARAMETER.fullmatch(k) and (v is None or isinstance(v, str | int | float | bool))}


def save_metrics(output_dir: str | Path, metrics: dict, parameters: dict, **extra) -> Path:
    """Write `metrics.json` into a notebook's OUTPUT_DIR: the metrics, the parameters the notebook ran with (as
    `notebook_parameters` captured them), anything in `extra` (a benchmark run's `run` block) and provenance."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "metrics.json"
    record = {"metrics": metrics, "parameters": parameters, **extra, **provenance()}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def load_metrics(output_dir: str | Path) -> dict:
    """What `save_metrics` wrote into `output_dir`: the whole record (metrics, parameters, run, provenance)."""
    return json.loads((Path(output_dir) / "metrics.json").read_text())


@dataclass
class NotebookSetup:
    """What a notebook's setup cell produces: its parameters (as run) and its output folder."""

    parameters: dict
    out: Path

    def save_metrics(self, metrics: dict) -> Path:
        """`metrics.json` in OUTPUT_DIR with this notebook's parameters."""
        return save_metrics(self.out, metrics, self.parameters)

    def show(self, fig, name: str | None = None, dpi: int = 110):
        """Display a figure in the notebook (as a PNG, so the exported report holds it whatever the kernel's
        matplotlib backend) and, with `name`, save the same PNG as OUTPUT_DIR/name."""
        from IPython.display import Image, display

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        if name:
            (self.out / name).write_bytes(buffer.getvalue())
        display(Image(buffer.getvalue()))

    def table(self, frame, name: str | None = None, digits: int = 1):
        """Display a DataFrame (numbers to `digits` decimals, missing ones as a dash) and, with `name`, save it as
        OUTPUT_DIR/name (CSV)."""
        from IPython.display import display

        from .tables import styled

        if name:
            frame.to_csv(self.out / name)
        display(styled(frame, digits))


def compact_image_tokens(text: str, token: str = "<image>") -> str:
    """A rendered conversation with every run of frame placeholders shortened to one, with its count:
    "<image><image><image><image>" -> "<image>x4"."""
    return re.sub(f"(?:{re.escape(token)})+", lambda m: f"{token}x{len(m.group(0)) // len(token)}", text)


def record_preview(record: dict, frames: int = 3) -> str:
    """A prediction record as JSON, one key per line and one frame per line, its per-frame `debug_data` cut to
    the first `frames` entries."""
    debug = record.get("debug_data", [])
    lines = []
    for key, value in record.items():
        if key == "debug_data":
            shown = [json.dumps(d, ensure_ascii=False) for d in debug[:frames]]
            if len(debug) > frames:
                shown.append(json.dumps(f"... {len(debug) - frames} more frames"))
            lines.append(' "debug_data": [\n  ' + ",\n  ".join(shown) + "\n ]")
        elif key == "model_response_list" and value:
            turns = ",\n  ".join(json.dumps(t, ensure_ascii=False) for t in value)
            lines.append(f' "{key}": [\n  {turns}\n ]')
        else:
            lines.append(f' "{key}": {json.dumps(value, ensure_ascii=False)}')
    return "{\n" + ",\n".join(lines) + "\n}"


def notebook_setup(namespace: dict) -> NotebookSetup:
    """A notebook's setup in one call: capture its parameters from `namespace` (`globals()`, right after the
    parameters cell), make OUTPUT_DIR, print provenance."""
    parameters = notebook_parameters(namespace)
    out = Path(parameters["OUTPUT_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    print(provenance_line())
    return NotebookSetup(parameters, out)


@dataclass
class BenchmarkSetup(NotebookSetup):
    """A benchmark notebook's setup: its files, the preset's settings at the notebook's frame rate, what the run
    is (`run`: toy world or the real benchmark) and the coverage rule its evaluation uses."""

    preset: str = ""
    kind: str = ""  # the evaluator: dvc | magqa | grounding | highlight
    settings: DuetSettings | None = None
    data_root: Path = Path(".")
    test_file: Path = Path(".")
    video_root: Path = Path(".")
    toy_world: bool = False

    @property
    def predictions(self) -> Path:
        return self.out / "predictions.jsonl"

    @property
    def limit(self) -> int | None:
        return self.parameters.get("LIMIT") or None

    @property
    def coverage(self) -> str:
        """"predictions" when LIMIT runs only the first examples (the rest are not scored), else "gold"."""
        return "predictions" if self.limit else "gold"

    @property
    def data_label(self) -> str:
        """"toy world (synthetic)", or the benchmark's name: for titles and legends."""
        return TOY_DATA if self.toy_world else BENCHMARKS[self.preset]

    def examples(self) -> list[dict]:
        """The test file's examples (checked loosely, as the runner reads them)."""
        from ..data.benchmarks import read_benchmark

        return read_benchmark(self.test_file, self.kind, strict=False)[0]

    def read_clip(self, example: dict, model, keep_original: bool = False):
        """The example's video decoded as the runner decodes it: the settings' frame rate, frame limit and rule,
        at the model's frame size. Returns a `video.Clip` (frames (T, 3, R, R) uint8)."""
        from ..video import read_video

        s = self.settings
        return read_video(self.video_root / example["video"], fps=s.fps, max_frames=s.max_frames,
                          resolution=s.resolution or model.config.vision_config.image_size, rule=s.frame_rule,
                          keep_original=keep_original)

    def run_info(self, examples: int) -> RunInfo:
        """What this run is (for labels, tables and metrics.json), `examples` being the number evaluated."""
        p = self.parameters
        scoring = ", ".join(part for part in (f"w={p['WINDOW']}" if "WINDOW" in p else "",
                                              f"threshold {p['THRESHOLD']:g}" if "THRESHOLD" in p else "") if part)
        return RunInfo(self.preset, self.toy_world, model_name(p), examples, self.settings.describe(), self.coverage,
                       self.limit or 0, scoring)

    def coverage_note(self, result: dict) -> str:
        """One line on which examples the numbers are over (LIMIT, the coverage rule, what was left out)."""
        c = result["counts"]
        if self.coverage == "predictions":
            return (f"LIMIT {self.limit}: the first {c['predictions']} of the {c['gold']} test examples were run, "
                    f"and the numbers are over those {c['evaluated']} (coverage=\"predictions\"); the other "
                    f"{c['missing_predictions']} were not run and are not counted. LIMIT 0 runs and scores them all.")
        note = f"All {c['gold']} test examples scored (coverage=\"gold\")"
        if c["missing_predictions"]:
            note += f"; {c['missing_predictions']} have no prediction (a failed video?) and count as zero"
        return note + "."

    def comparison(self, metrics: dict, examples: int, threshold: float | None = None) -> str:
        """The summary's sentence: this run's numbers, labelled, and the paper's for the same benchmark."""
        info = self.run_info(examples)
        return comparison_line(self.preset, metrics, info.label, info.comparable, threshold)

    def save_metrics(self, metrics: dict, examples: int | None = None) -> Path:
        """`metrics.json` with this notebook's parameters and the run's `RunInfo`."""
        examples = metrics.get("evaluated", 0) if examples is None else examples
        return save_metrics(self.out, metrics, self.parameters, run=self.run_info(examples).to_dict())


def benchmark_setup(namespace: dict, preset: str, **settings_changes) -> BenchmarkSetup:
    """A benchmark notebook's setup in one call. From the parameters in `namespace` (`globals()`, right after the
    parameters cell): the paths (DATA_ROOT / TEST_FILE, DATA_ROOT / VIDEO_ROOT, OUTPUT_DIR), the toy world's test
    split made when the toy model runs on a toy world that lacks it (with a progress bar), upstream's `preset`
    settings at FPS with `settings_changes`, and provenance and settings printed."""
    from ..run.benchmark import PRESETS
    from ..toyworld import prepare_toy_benchmark

    parameters = notebook_parameters(namespace)
    out = Path(parameters["OUTPUT_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    data_root = Path(parameters["DATA_ROOT"])
    print(provenance_line())
    if parameters.get("MODEL") == "toy" or is_toy_world(data_root):
        started = time.perf_counter()
        made = prepare_toy_benchmark(data_root, parameters["TEST_FILE"], parameters.get("SEED", 0))
        for split, info in made.items():
            print(f"toy world: made the {split} split ({info['videos']} videos, {info['seconds']:.0f} s of video) "
                  f"in {time.perf_counter() - started:.0f} s")
    settings = PRESETS[preset].settings.replace(fps=parameters["FPS"], **settings_changes)
    setup = BenchmarkSetup(parameters, out, preset=preset, kind=PRESETS[preset].benchmark, settings=settings,
                           data_root=data_root, test_file=data_root / parameters["TEST_FILE"],
                           video_root=data_root / parameters["VIDEO_ROOT"], toy_world=is_toy_world(data_root))
    print(f"data: {setup.data_label} ({parameters['DATA_ROOT']}); model: {model_name(parameters)}")
    print(f"settings ({preset} preset at {settings.fps:g} fps): {settings.describe()}")
    return setup


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
