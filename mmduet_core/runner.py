"""Old module path, kept for existing code: benchmark inference lives in `mmduet_core.run.benchmark` (the presets,
`run_benchmark`, `infer_example`) and `mmduet_core.run.outputs` (the prediction file and its sidecars)."""

from .run.benchmark import *  # noqa: F403
from .run.benchmark import (  # noqa: F401
    PRESETS,
    BenchmarkPreset,
    InferenceConfig,
    RunSummary,
    infer_example,
    run_benchmark,
    summary_dict,
)
from .run.outputs import *  # noqa: F403
from .run.outputs import append_line, finished_ids, merge_shards, shard_path  # noqa: F401
