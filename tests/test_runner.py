"""The benchmark runner: records, errors file, SIGKILL + resume, the settings sidecar, shard merging, grouped
inference."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from mmduet_core.data.benchmarks import write_examples
from mmduet_core.errors import InputError
from mmduet_core.model import DuetModel
from mmduet_core.model.checkpoint import load_model, save_model, tiny_config
from mmduet_core.model.template import DEFAULT_SYSTEM_PROMPT, train_tokenizer
from mmduet_core.run.benchmark import PRESETS, run_benchmark
from mmduet_core.run.outputs import finished_ids, merge_shards, settings_path, shard_path
from mmduet_core.stream import DuetSettings
from mmduet_core.video import write_video


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("runner")
    tok = train_tokenizer([DEFAULT_SYSTEM_PROMPT, "Which clips relate to the query 'a red square'?"] * 3, vocab_size=300)
    torch.manual_seed(0)
    save_model(DuetModel(tiny_config(len(tok), tok.convert_tokens_to_ids("<image>"))), tok, root / "model")
    rng = np.random.default_rng(0)
    examples = []
    for i in range(24):
        frames = [rng.integers(0, 255, (54, 54, 3), dtype=np.uint8) for _ in range(30 + i)]
        write_video(root / "videos" / f"v{i}.mp4", frames, 10)
        duration = (30 + i) / 10
        examples.append({"question_id": f"v{i}_0", "video": f"v{i}.mp4", "duration": duration,
                         "conversation": [{"role": "user", "content": "Which clips relate to the query 'a red square'?",
                                           "time": 0.0}], "timestamps": [[0.5, 1.5]]})
    examples.insert(3, {**examples[0], "question_id": "missing_0", "video": "missing.mp4"})
    write_examples(examples, root / "test.json")
    return root


def _infer(world, out, *extra):
    return [sys.executable, "-m", "mmduet_core", "infer", "--benchmark", "charades", "--data", str(world / "test.json"),
            "--video-root", str(world / "videos"), "--out", str(out), "--model", str(world / "model"),
            "--device", "cpu", *extra]


def test_records_and_errors(world, tmp_path):
    model, tok = load_model(world / "model", device="cpu")
    summary = run_benchmark(model, tok, world / "test.json", world / "videos", tmp_path / "pred.jsonl", "charades",
                            limit=6, progress=False)
    assert (summary.written, summary.failed) == (5, 1)
    lines = [json.loads(x) for x in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in lines] == ["v0_0", "v1_0", "v2_0", "v3_0", "v4_0"]
    first = lines[0]
    assert first["video_duration"] == 3.0 and len(first["debug_data"]) == 6  # 3 s at 2 fps, ceil
    assert first["model_response_list"][0]["role"] == "user" and len(first["model_response_list"]) == 1
    error = json.loads((tmp_path / "pred.errors.jsonl").read_text())
    assert error["question_id"] == "missing_0" and "no such video file" in error["error"]
    assert 0.0 <= summary.decode_hidden_share <= 1.0
    assert (summary.videos, summary.videos_decoded, summary.status) == (5, 5, "some failed")
    assert json.loads(settings_path(tmp_path / "pred.jsonl").read_text())["settings"]["fps"] == 2.0


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(world, tmp_path):
    full = tmp_path / "full.jsonl"
    done = subprocess.run(_infer(world, full), capture_output=True, text=True)
    assert done.returncode == 1 and json.loads(done.stdout)["status"] == "some failed"  # missing.mp4
    killed = tmp_path / "killed.jsonl"
    proc = subprocess.Popen(_infer(world, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not killed.exists() or killed.read_text().count("\n") < 5):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = killed.read_text().count("\n")
    assert 5 <= partial < 24, f"killed after {partial} records: not midway"
    with killed.open("a") as f:  # a torn line, as a kill during a write would leave
        f.write('{"question_id": "v9')
    resumed = subprocess.run(_infer(world, killed, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 1 and json.loads(resumed.stdout)["failed"] == 1, resumed.stderr
    assert killed.read_text() == full.read_text()
    ids = [json.loads(x)["question_id"] for x in killed.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 24


def test_finished_ids_cuts_a_torn_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"question_id": 1}\n{"question_id": 2}\n{"question_')
    assert finished_ids(path) == {1, 2}
    assert path.read_text() == '{"question_id": 1}\n{"question_id": 2}\n'


def test_shards_merge_in_dataset_order(world, tmp_path):
    model, tok = load_model(world / "model", device="cpu")
    out = tmp_path / "pred.jsonl"
    for rank in range(2):
        run_benchmark(model, tok, world / "test.json", world / "videos", out, "charades", limit=7, progress=False,
                      shard=(rank, 2))
    assert shard_path(out, 1, 2).name == "pred.rank1of2.jsonl"
    order = [f"v{i}_0" for i in range(3)] + ["missing_0"] + [f"v{i}_0" for i in range(3, 6)]
    assert merge_shards(out, order) == 6
    assert [json.loads(x)["question_id"] for x in out.read_text().splitlines()] == [q for q in order if q != "missing_0"]


def test_presets_are_upstreams():
    yc2, magqa, ch, qvh = (PRESETS[k].settings for k in ("youcook2", "magqa", "charades", "qvh"))
    assert (yc2.fps, yc2.max_frames, yc2.mode, yc2.reply_threshold, yc2.remove_assistant_turns) == \
        (0.5, 200, "sum", 2.0, True)
    assert magqa.score_heads == ("informative_score", "relevance_score") and magqa.reply_threshold == 0.5
    # upstream passes a probability threshold of 1 for grounding: no score exceeds it, so it never replies
    assert (ch.fps, qvh.fps, ch.mode, qvh.mode, ch.can_reply) == (2.0, 1.0, "never", "never", False)


def _multi_query(world) -> list[dict]:
    """Several queries per video, asked at different times (queries of a video contiguous, as in Charades)."""
    examples = []
    for i in range(4):
        for k, (text, t) in enumerate([("Which clips relate to the query 'a red square'?", 0.0),
                                       ("What is happening?", 1.0), ("a red square", 0.5)][:2 + i % 2]):
            examples.append({"question_id": f"v{i}_{k}", "video": f"v{i}.mp4", "duration": (30 + i) / 10,
                             "conversation": [{"role": "user", "content": text, "time": t}], "timestamps": [[0.5, 1.5]]})
    return examples


@pytest.mark.parametrize("settings", [
    PRESETS["charades"].settings,
    PRESETS["youcook2"].settings.replace(fps=2.0, reply_threshold=1.0, max_new_tokens=4),  # replies taken out
    DuetSettings(mode="prob", reply_threshold=0.3, max_new_tokens=4),  # replies kept in the context
], ids=["never", "sum-removed", "prob-kept"])
def test_grouped_inference_gives_the_records_of_per_query_inference(world, tmp_path, settings):
    model, tok = load_model(world / "model", device="cpu")
    examples = _multi_query(world)
    grouped = run_benchmark(model, tok, examples, world / "videos", tmp_path / "g.jsonl", settings, progress=False)
    single = run_benchmark(model, tok, examples, world / "videos", tmp_path / "q.jsonl", settings, progress=False,
                           group_videos=False)
    assert (tmp_path / "g.jsonl").read_bytes() == (tmp_path / "q.jsonl").read_bytes()
    assert [json.loads(x)["question_id"] for x in (tmp_path / "g.jsonl").read_text().splitlines()] == \
        [e["question_id"] for e in examples]
    assert (grouped.videos, grouped.videos_decoded, grouped.decodes_per_video) == (4, 4, 1.0)
    assert (single.videos, single.videos_decoded) == (4, len(examples))
    if settings.can_reply:  # the shared frame embeddings also served sessions that replied
        records = [json.loads(x) for x in (tmp_path / "g.jsonl").read_text().splitlines()]
        assert any(r["role"] == "assistant" for rec in records for r in rec["model_response_list"])


def test_resume_refuses_other_settings_and_no_resume_starts_over(world, tmp_path):
    model, tok = load_model(world / "model", device="cpu")
    out = tmp_path / "pred.jsonl"
    one, two = PRESETS["charades"].settings.replace(fps=1.0), PRESETS["charades"].settings
    run_benchmark(model, tok, world / "test.json", world / "videos", out, one, limit=2, progress=False)
    written = out.read_bytes()
    with pytest.raises(InputError, match=r"other settings \(fps: 1\.0 -> 2\.0\)"):
        run_benchmark(model, tok, world / "test.json", world / "videos", out, two, limit=3, progress=False)
    assert out.read_bytes() == written
    # speed settings never change a record: resuming with other ones is fine
    summary = run_benchmark(model, tok, world / "test.json", world / "videos", out, one.replace(chunk_frames=3),
                            limit=3, progress=False)
    assert (summary.skipped_finished, summary.written) == (2, 1)
    summary = run_benchmark(model, tok, world / "test.json", world / "videos", out, two, limit=2, progress=False,
                            resume=False)
    assert (summary.skipped_finished, summary.written) == (0, 2)
    frames = [len(json.loads(x)["debug_data"]) for x in out.read_text().splitlines()]
    assert frames == [6, 7]  # 3 s and 3.1 s at 2 fps: only the new settings' records
    assert json.loads(settings_path(out).read_text())["settings"]["fps"] == 2.0


def test_old_names_still_work():
    """Names from before the package was reorganised stay usable and say what replaced them."""
    from mmduet_core import checkpoint, runner
    from mmduet_core.interactive.demo import DemoSettings
    from mmduet_core.model import load_model as new_load_model
    from mmduet_core.run.benchmark import InferenceConfig
    from mmduet_core.stream import DuetSettings, ResponsePolicy

    assert checkpoint.load_model is new_load_model and runner.PRESETS is PRESETS
    assert runner.run_benchmark is run_benchmark and runner.infer_example.__module__ == "mmduet_core.run.benchmark"
    assert PRESETS["charades"].config is PRESETS["charades"].settings
    policy = ResponsePolicy("sum", 2.0, ("informative_score",), remove_assistant_turns=True)
    assert InferenceConfig(fps=0.5, max_frames=200, policy=policy) == PRESETS["youcook2"].settings
    assert DemoSettings("sum score", threshold=1.5).mode == "sum" and isinstance(policy, DuetSettings)
    for old in (checkpoint, runner, ResponsePolicy, InferenceConfig, DemoSettings):
        assert "Old name" in old.__doc__ or "Old module path" in old.__doc__
