"""What produced a benchmark notebook's numbers, recorded beside them, and reading a run folder back.

A benchmark notebook's `metrics.json` carries, besides its metrics and parameters, a `run` block (`RunInfo`):
the preset, whether the data was the toy world, the model, the settings, the coverage rule. Tables and figures
decide from it whether a run may stand beside the paper's numbers (`RunInfo.comparable`) and how to label it: a
toy-world run is always called "toy world (synthetic)", never by the benchmark's name alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from .paper import BENCHMARKS

TOY_DATA = "toy world (synthetic)"


@dataclass(frozen=True)
class RunInfo:
    """What a benchmark run is: enough to label it and to decide whether it compares with the paper."""

    preset: str  # upstream preset: youcook2 | magqa | charades | qvh
    toy_world: bool  # the data is the synthetic toy world
    model: str  # "toy model" or "<base> + <adapter>"
    examples: int  # examples evaluated
    settings: str = ""  # DuetSettings.describe() of the run
    coverage: str = "gold"  # the evaluators' coverage rule used
    limit: int = 0  # LIMIT: the first N examples of the test file (0: all)
    scoring: str = ""  # how the recorded numbers were scored, e.g. "w=6, threshold 0.5"

    @property
    def benchmark(self) -> str:
        """The paper's benchmark this preset stands for (which the data is only when `toy_world` is False)."""
        return BENCHMARKS[self.preset]

    @property
    def data(self) -> str:
        return TOY_DATA if self.toy_world else self.benchmark

    @property
    def comparable(self) -> bool:
        """A real checkpoint on the real benchmark: its numbers may stand beside the paper's."""
        return not self.toy_world and self.model != "toy model"

    @property
    def label(self) -> str:
        """e.g. "toy world (synthetic), toy model, first 60 examples, w=6, threshold 0.5" or "Charades-STA test,
        <model>, 3720 examples, w=6, threshold 0.5"."""
        first = "first " if self.limit and self.examples == self.limit else ""
        scoring = f", {self.scoring}" if self.scoring else ""
        return f"{self.data}, {self.model}, {first}{self.examples} examples{scoring}"

    def to_dict(self) -> dict:
        return {**asdict(self), "data": self.data, "comparable": self.comparable, "label": self.label}

    @classmethod
    def from_dict(cls, d: dict) -> RunInfo:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def model_name(parameters: dict) -> str:
    """"toy model", or the base's last path part with the adapter's."""
    model = str(parameters.get("MODEL", "?"))
    if model == "toy":
        return "toy model"
    base = model.rstrip("/").rsplit("/", 1)[-1]
    adapter = str(parameters.get("ADAPTER") or "")
    return f"{base} + {adapter.rstrip('/').rsplit('/', 1)[-1]}" if adapter else f"{base} (no adapter)"


def is_toy_world(data_root: str | Path) -> bool:
    """A toy world is a folder its generator marked with `world.json`."""
    return (Path(data_root) / "world.json").exists()


@dataclass
class RunReport:
    """A notebook's output folder read back: its metrics, parameters and (for benchmark notebooks) `RunInfo`."""

    folder: Path
    metrics: dict
    parameters: dict
    run: RunInfo | None = None
    provenance: dict = field(default_factory=dict)

    @property
    def predictions(self) -> Path:
        return self.folder / "predictions.jsonl"

    def gold_file(self, key: str = "TEST_FILE") -> Path:
        """The gold file the run was scored against: DATA_ROOT / parameters[key], relative to the notebooks'
        folder as the run saw it."""
        return Path(self.parameters["DATA_ROOT"]) / self.parameters[key]


def load_run(folder: str | Path, preset: str | None = None) -> RunReport | None:
    """A notebook's output folder (`metrics.json` as `save_metrics` wrote it), or None when it has none. A record
    written before runs carried a `run` block is described from its parameters (`preset` says which notebook)."""
    from .notebooks import load_metrics

    folder = Path(folder)
    if not (folder / "metrics.json").is_file():
        return None
    record = load_metrics(folder)
    params, metrics = record.get("parameters", {}), record.get("metrics", {})
    info = record.get("run")
    if isinstance(info, dict) and "preset" in info:
        run = RunInfo.from_dict(info)
    elif preset:
        data_root = str(params.get("DATA_ROOT", ""))
        toy = params.get("MODEL") == "toy" and "toyworld" in data_root or is_toy_world(data_root)
        run = RunInfo(preset, toy, model_name(params), int(metrics.get("evaluated", 0)), limit=int(params.get("LIMIT") or 0),
                      coverage="predictions" if params.get("LIMIT") else "gold")
    else:
        run = None
    provenance = {k: record[k] for k in ("git_commit", "versions", "python", "machine") if k in record}
    return RunReport(folder, metrics, params, run, provenance)


def load_runs(folders: dict[str, str | Path]) -> dict[str, RunReport | None]:
    """{preset: run folder} -> {preset: RunReport, or None where the folder holds no metrics.json}."""
    return {preset: load_run(folder, preset) for preset, folder in folders.items()}
