"""Benchmark test files: converters from the public gold files, validators, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmduet_core.data.benchmarks import DataError, read_benchmark, validate_example, write_examples
from mmduet_core.data.convert import convert
from mmduet_core.data.prompts import DVC_INSTRUCTIONS, GROUNDING_TEMPLATES

from .conftest import FIXTURES, shared_path

GOLD = FIXTURES / "gold"


@pytest.mark.parametrize(("kind", "rel", "examples", "videos", "answers"), [
    # the file has 1,550 JSON lines (its last line has no newline, so `wc -l` says 1,549)
    ("qvh", "data/qvhighlights/highlight_val_release.jsonl", 1550, 1519, 0),
    ("charades", "data/charades_sta/charades_test.json", 3720, 1334, 0),
    ("youcook2", "data/youcook2/yc2_val.json", 457, 457, 3492),
])
def test_converters_on_the_full_gold_files(tmp_path, kind, rel, examples, videos, answers):
    src = shared_path(rel)
    out = tmp_path / f"{kind}.json"
    result = subprocess.run([sys.executable, "-m", "mmduet_core", "convert", kind, "--src", str(src), "--out", str(out)],
                            capture_output=True, text=True, check=True)
    summary = json.loads(result.stdout)
    assert (summary["examples"], summary["videos"]) == (examples, videos)
    benchmark = summary["benchmark"]
    converted, errors = read_benchmark(out, benchmark)
    assert not errors and len(converted) == examples
    assert sum(len(e.get("answer", [])) for e in converted) == answers
    # deterministic prompts
    again = tmp_path / "again.json"
    subprocess.run([sys.executable, "-m", "mmduet_core", "convert", kind, "--src", str(src), "--out", str(again)],
                   check=True, capture_output=True)
    assert again.read_text() == out.read_text()


def test_converted_fields_and_prompts():
    qvh, _ = convert("qvh", GOLD / "qvh_val_subset.jsonl")
    first = qvh[0]
    assert first["question_id"] == 2579 and isinstance(first["question_id"], int)
    assert first["video"] == "NUsG9BgSes0_210.0_360.0.mp4" and first["duration"] == 150.0
    assert any(first["conversation"][0]["content"] == t % first["query"] for t in GROUNDING_TEMPLATES)
    charades, _ = convert("charades", GOLD / "charades_test_subset.json")
    assert charades[0]["question_id"] == "3MSZA_0" and charades[0]["timestamps"] == [[24.3, 30.4]]
    yc2, _ = convert("youcook2", GOLD / "yc2_val_subset.json")
    assert yc2[0]["question_id"] == "xHr8X2Wpmno"
    assert yc2[0]["conversation"][0]["content"] in DVC_INSTRUCTIONS
    assert yc2[0]["answer"][0] == {"content": "pick the ends off the verdalago", "time": [47.0, 60.0]}
    assert all(t["time"] == 0.0 for e in qvh + charades + yc2 for t in e["conversation"])


def _good():
    return {"question_id": "q1", "video": "v.mp4", "duration": 10.0,
            "conversation": [{"role": "user", "content": "Q?", "time": 0.0}], "timestamps": [[1.0, 2.0]]}


@pytest.mark.parametrize(("change", "message"), [
    (lambda e: e.pop("video"), "missing field 'video'"),
    (lambda e: e.update(conversation=[]), "non-empty"),
    (lambda e: e["conversation"][0].update(time="soon"), "not a number"),
    (lambda e: e["conversation"][0].update(time=float("nan")), "not a number"),
    (lambda e: e["conversation"][0].update(time=42.0), "outside the video"),
    (lambda e: e.update(timestamps=[[3.0, 2.0]]), "ends before it starts"),
    (lambda e: e.update(timestamps=[[1.0, 25.0]]), "outside the video"),
    (lambda e: e.update(colour="red"), "unknown fields"),
    (lambda e: e.update(question_id=True), "question_id"),
])
def test_validator_reasons(change, message):
    example = _good()
    validate_example(example, "grounding")
    change(example)
    with pytest.raises(ValueError, match=message):
        validate_example(example, "grounding")


def test_read_benchmark_names_file_and_example_and_can_skip(tmp_path):
    bad = _good()
    bad["conversation"][0]["time"] = "x"
    path = write_examples([_good(), bad, {**_good(), "question_id": "q1"}], tmp_path / "t.json")
    with pytest.raises(DataError, match=r"t\.json example 1 \(question_id 'q1'\): turn 0 time is not a number"):
        read_benchmark(path, "grounding")
    examples, errors = read_benchmark(path, "grounding", on_error="skip")
    assert len(examples) == 1 and len(errors) == 2 and "duplicate question_id" in errors[1]
    assert all("\n" not in e for e in errors)
    lenient = {**_good(), "colour": "red"}
    write_examples([lenient], tmp_path / "l.json")
    assert len(read_benchmark(tmp_path / "l.json", "grounding", strict=False)[0]) == 1


def test_cli_errors_are_one_line(tmp_path):
    (tmp_path / "empty.json").write_text("")
    for args in (["convert", "charades", "--src", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o.json")],
                 ["convert", "youcook2", "--src", str(tmp_path / "empty.json"), "--out", str(tmp_path / "o.json")],
                 ["convert", "charades", "--src", str(GOLD / "qvh_val_subset.jsonl"), "--out", str(tmp_path / "o.json")]):
        result = subprocess.run([sys.executable, "-m", "mmduet_core", *args], capture_output=True, text=True)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
