"""The benchmark runner: records, errors file, SIGKILL + resume, shard merging."""

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
from mmduet_core.model import DuetModel
from mmduet_core.model.checkpoint import load_model, save_model, tiny_config
from mmduet_core.model.template import DEFAULT_SYSTEM_PROMPT, train_tokenizer
from mmduet_core.runner import PRESETS, finished_ids, merge_shards, run_benchmark, shard_path
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


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(world, tmp_path):
    full = tmp_path / "full.jsonl"
    subprocess.run(_infer(world, full), check=True, capture_output=True)
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
    subprocess.run(_infer(world, killed, "--resume"), check=True, capture_output=True)
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
    assert merge_shards(out, 2, order) == 6
    assert [json.loads(x)["question_id"] for x in out.read_text().splitlines()] == [q for q in order if q != "missing_0"]


def test_presets_are_upstreams():
    yc2, magqa, ch, qvh = (PRESETS[k].settings for k in ("youcook2", "magqa", "charades", "qvh"))
    assert (yc2.fps, yc2.max_frames, yc2.mode, yc2.reply_threshold, yc2.remove_assistant_turns) == \
        (0.5, 200, "sum", 2.0, True)
    assert magqa.score_heads == ("informative_score", "relevance_score") and magqa.reply_threshold == 0.5
    # upstream passes a probability threshold of 1 for grounding: no score exceeds it, so it never replies
    assert (ch.fps, qvh.fps, ch.mode, qvh.mode, ch.can_reply) == (2.0, 1.0, "never", "never", False)
