"""`mmduet bench`: small runs of each benchmark check what they report (agreement, the stated workload), not speed."""

from __future__ import annotations

import json

import pytest
import torch

from mmduet_core.cli import main
from mmduet_core.stream import DuetSettings
from mmduet_core.tools import bench


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_every_kth_frame_rule_and_its_copy():
    rule = bench.EveryKthFrame(DuetSettings(), every=3)
    fired = [rule.decide(0.0, 0.0) for _ in range(4)]
    copy = rule.copy()
    assert fired == [False, False, True, False]
    assert [copy.decide(0.0, 0.0) for _ in range(3)] == [False, True, False]  # the copy continues the count
    assert rule.frames_seen == 4


@pytest.mark.timeout(300)
def test_bench_stream_command_states_its_workload_and_paths_agree(capsys):
    assert main(["bench", "stream", "--model", "tiny4", "--frames", "12", "--reply-every", "4",
                 "--reply-tokens", "3", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["torch_threads"] == 1 and out["tokens_per_frame"] == 4
    assert "every 4 frames" in out["reply_rule"] and "exactly 3" in out["reply_tokens"]
    assert out["timing"] == "each side timed once" and out["floor_frames_per_s"] > 0
    assert [r["replies"] for r in out["rows"]] == [0, 3, 3]  # frames 3, 7 and 11 in both reply modes
    for row in out["rows"]:
        assert row["same_replies"] and row["max_prob_diff"] < 1e-4
        assert row["ratio"] > 0 and row["fast_over_floor"] > 0


@pytest.mark.timeout(300)
def test_bench_generate_gives_transformers_tokens():
    out = bench.bench_generate("tiny4", context_frames=(2, 8), new_tokens=6, repeat=1, threads=1)
    assert [r["context_tokens"] for r in out["rows"]] == [8, 32]
    assert all(r["identical_tokens"] and r["ratio"] > 0 for r in out["rows"])


def test_charades_gold_does_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MMDUET_SHARED", str(tmp_path / "nothing-here"))
    assert bench.charades_gold() == bench.CHARADES_FIXTURE and bench.CHARADES_FIXTURE.exists()
    shared = tmp_path / "shared" / bench.CHARADES_SHARED
    shared.parent.mkdir(parents=True)
    shared.write_text("[]")
    monkeypatch.setenv("MMDUET_SHARED", str(tmp_path / "shared"))
    assert bench.charades_gold() == shared


@pytest.mark.timeout(300)
def test_bench_video_on_a_small_file(tmp_path):
    clip = bench.synthetic_video(tmp_path / "small.mp4", 45, 120, 160)
    out = bench.bench_video([str(clip)], fps=2.0, runner=False)
    (row,) = out["rows"]
    assert row["same_frames"] and row["frames"] == 3 and row["within_bound"]
    assert row["selected_frames_mb"] == pytest.approx(3 * 3 * 384 * 384 / 2**20, abs=0.1)
