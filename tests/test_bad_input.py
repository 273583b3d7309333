"""Bad input never hangs, never lies, never costs finished work.

A table of bad inputs to `mmduet` and to the Python API, each with the one line it must produce (naming what is
wrong and where); then the behaviours around them: the errors file, exit codes, resume refusing other settings,
leftover process files picked up, and a real 2-process sharded run over an existing single-process output.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmduet_core import cli
from mmduet_core.data.benchmarks import DataError, read_benchmark, write_examples
from mmduet_core.errors import InputError
from mmduet_core.model import checkpoint
from mmduet_core.model.checkpoint import TOY_DIR, load_model
from mmduet_core.run.benchmark import PRESETS, run_benchmark
from mmduet_core.run.outputs import merge_shards, run_identity, shard_path, write_settings
from mmduet_core.stream import DuetSession, DuetSettings
from mmduet_core.video import write_video

QUERY = "Identify the parts that mention 'a red square'."


def _example(qid: str, video: str, time=0.0) -> dict:
    return {"question_id": qid, "video": video, "duration": 2.0, "timestamps": [[0.0, 1.0]],
            "conversation": [{"role": "user", "content": QUERY, "time": time}]}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Three 2 s toy-sized videos (4 frames each at 2 fps) and a test file of five queries over them."""
    root = tmp_path_factory.mktemp("bad_input")
    rng = np.random.default_rng(0)
    for k in range(3):
        write_video(root / "videos" / f"v{k}.mp4", [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
                                                    for _ in range(20)], 10)
    examples = [_example("v0_0", "v0.mp4"), _example("v0_1", "v0.mp4"), _example("v1_0", "v1.mp4"),
                _example("v1_1", "v1.mp4"), _example("v2_0", "v2.mp4")]
    write_examples(examples, root / "test.json")
    bad = [dict(e) for e in examples]
    bad[2] = _example("v1_0", "v1.mp4", time="3")
    write_examples(bad, root / "strtime.json")
    write_examples(examples[:2] + [examples[0]], root / "dupes.json")
    (root / "afile").write_text("not a folder")
    return root


@pytest.fixture(scope="module")
def toy():
    return load_model("toy", device="cpu")


@pytest.fixture(scope="module")
def folders(tmp_path_factory, toy) -> dict[str, Path]:
    """Broken model folders: pickle weights only, no tokenizer, and a LoRA adapter without the two heads."""
    root = tmp_path_factory.mktemp("folders")
    pickle = shutil.copytree(TOY_DIR, root / "pickle")
    from safetensors.torch import load_file

    torch.save(load_file(str(pickle / "model.safetensors")), pickle / "pytorch_model.bin")
    (pickle / "model.safetensors").unlink()
    notok = shutil.copytree(TOY_DIR, root / "notok")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (notok / name).unlink()
    from peft import LoraConfig, get_peft_model

    model, _ = load_model("toy", device="cpu")
    targets = r"model\.language_model\.layers.*(q_proj|v_proj)$"
    get_peft_model(model, LoraConfig(r=2, target_modules=targets)).save_pretrained(str(root / "noheads"))
    return {"pickle": pickle, "notok": notok, "noheads": root / "noheads"}


def _written(out: Path, fps: float = 2.0, lines: list[str] | None = None) -> Path:
    """An output as a killed charades run with `fps` would leave it: sidecar and record lines."""
    identity = run_identity(PRESETS["charades"].settings.replace(fps=fps), "grounding", "toy", None, "float32")
    write_settings(out, identity)
    record = {"question_id": "v0_0", "model_response_list": [], "video_duration": 2.0, "debug_data": []}
    out.write_text("".join(x + "\n" for x in (lines or [json.dumps(record)])))
    return out


def _argv(world: Path, out: Path, *extra: str, data: str = "test.json") -> list[str]:
    return ["infer", "--benchmark", "charades", "--data", str(world / data), "--video-root", str(world / "videos"),
            "--out", str(out), "--device", "cpu", *extra]


# ---- the table: bad input -> one line naming what and where -------------------------------------------------

# (case, argv builder (world, tmp, folders) -> argv, setup(world, tmp), fragments the one line must contain,
#  whether the model may be loaded before the error)
CLI_CASES = [
    ("kv window frames -1", lambda w, t, f: _argv(w, t / "p.jsonl", "--kv-window-frames", "-1"), None,
     ["--kv-window-frames", ">= 1", "-1"], False),
    ("old --kv-window -1", lambda w, t, f: _argv(w, t / "p.jsonl", "--kv-window", "-1"), None,
     ["--kv-window ", ">= 1"], False),
    ("kv window 0", lambda w, t, f: _argv(w, t / "p.jsonl", "--kv-window-frames", "0"), None,
     ["--kv-window-frames", ">= 1", "0"], False),
    ("fps nan", lambda w, t, f: _argv(w, t / "p.jsonl", "--fps", "nan"), None, ["--fps", "finite", "nan"], False),
    ("threshold inf", lambda w, t, f: _argv(w, t / "p.jsonl", "--reply-threshold", "inf"), None,
     ["--reply-threshold", "finite"], False),
    ("device nonexistent", lambda w, t, f: _argv(w, t / "p.jsonl", "--device", "nonexistent"), None,
     ["device 'nonexistent'", "not a device"], False),
    ("device cuda:7", lambda w, t, f: _argv(w, t / "p.jsonl", "--device", "cuda:7"), None,
     ["device 'cuda:7'", "GPU"], False),
    ("limit -1", lambda w, t, f: _argv(w, t / "p.jsonl", "--limit", "-1"), None, ["limit", ">= 1", "-1"], False),
    ("out under a file", lambda w, t, f: _argv(w, w / "afile" / "p.jsonl"), None,
     ["afile/p.jsonl", "afile is a file"], False),
    ("out is a folder", lambda w, t, f: _argv(w, t), None, ["{tmp}", "is a folder"], False),
    ("out unwritable", lambda w, t, f: _argv(w, Path("/proc/mmduet_p.jsonl")), None,
     ["/proc/mmduet_p.jsonl", "not writable"], False),
    ("video root missing", lambda w, t, f: _argv(w, t / "p.jsonl")[:5] + ["--video-root", str(t / "nope"),
                                                                          "--out", str(t / "p.jsonl")], None,
     ["video root", "nope", "no such folder"], False),
    ("data missing", lambda w, t, f: _argv(w, t / "p.jsonl", data="nope.json"), None,
     ["nope.json", "no such file"], False),
    ("string time", lambda w, t, f: _argv(w, t / "p.jsonl", data="strtime.json"), None,
     ["strtime.json example 2", "question_id 'v1_0'", "turn 0 time", "'3'", "(line "], False),
    ("duplicate question_id", lambda w, t, f: _argv(w, t / "p.jsonl", data="dupes.json"), None,
     ["dupes.json example 2", "duplicate question_id", "'v0_0'"], False),
    ("resume with other settings", lambda w, t, f: _argv(w, t / "p.jsonl", "--fps", "1"),
     lambda w, t: _written(t / "p.jsonl", fps=2.0), ["p.jsonl", "other settings", "fps: 2.0 -> 1.0", "--no-resume"],
     False),
    ("records without sidecar", lambda w, t, f: _argv(w, t / "p.jsonl"),
     lambda w, t: (t / "p.jsonl").write_text('{"question_id": "v0_0"}\n'), ["p.jsonl", "p.settings.json"], False),
    ("corrupt sidecar", lambda w, t, f: _argv(w, t / "p.jsonl"),
     lambda w, t: (t / "p.settings.json").write_text("{fps"), ["p.settings.json", "not JSON"], False),
    ("corrupt line mid-output", lambda w, t, f: _argv(w, t / "p.jsonl"),
     lambda w, t: _written(t / "p.jsonl", lines=['{"question_id": "v0_0"}', '{"question_id": "v0_', '{"question_id": 3}']),
     ["p.jsonl:2:", "not a JSON record"], False),
    ("line without question_id", lambda w, t, f: _argv(w, t / "p.jsonl"),
     lambda w, t: _written(t / "p.jsonl", lines=['{"question_id": "v0_0"}', '{"qid": "v0_1"}']),
     ["p.jsonl:2:", "without a question_id"], False),
    ("accelerate --cpu, 2 processes", lambda w, t, f: _argv(w, t / "p.jsonl"), "accelerate-cpu",
     ["--cpu --num_processes", "single process", "--multi_gpu"], False),
    ("model folder missing", lambda w, t, f: _argv(w, t / "p.jsonl", "--model", str(t / "nomodel")), None,
     ["nomodel", "no such folder"], True),
    ("pickle weights only", lambda w, t, f: _argv(w, t / "p.jsonl", "--model", str(f["pickle"])), None,
     ["pickle", "pytorch_model.bin", "not loaded"], True),
    ("no tokenizer", lambda w, t, f: _argv(w, t / "p.jsonl", "--model", str(f["notok"])), None,
     ["notok", "no tokenizer"], True),
    ("adapter without heads", lambda w, t, f: _argv(w, t / "p.jsonl", "--adapter", str(f["noheads"])), None,
     ["noheads", "informative_head", "relevance_head"], True),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("case", "argv", "setup", "fragments", "may_load"), CLI_CASES,
                         ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_one_line_and_exit_2(case, argv, setup, fragments, may_load, world, folders, tmp_path,
                                              capsys, monkeypatch):
    if case == "out unwritable" and not Path("/proc/self").exists():
        pytest.skip("needs Linux /proc (an unwritable folder even for root)")
    if setup == "accelerate-cpu":  # what `accelerate launch --cpu --num_processes 2` leaves to its one process
        monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
        for name in ("LOCAL_RANK", "WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
            monkeypatch.delenv(name, raising=False)
    elif setup:
        setup(world, tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    if not may_load:  # checked before any compute: loading the model would be a failure
        monkeypatch.setattr(checkpoint, "load_model", lambda *a, **k: pytest.fail(f"{case}: model loaded"))
    code = cli.main(argv(world, tmp_path, folders))
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip() and not x.startswith(("note:", "Loading weights"))]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("mmduet infer: error: "), err
    for fragment in fragments:
        assert fragment.replace("{tmp}", str(tmp_path)) in lines[0], (fragment, lines[0])
    # nothing already written is lost or changed
    assert {p: p.read_bytes() for p in before} == before


def _cases_api(world: Path, toy, tmp: Path):
    model, tok = toy
    side = model.config.vision_config.image_size
    session = DuetSession(model, tok, DuetSettings(mode="never"))
    videos = world / "videos"
    return [
        ("unknown preset", lambda: run_benchmark(model, tok, world / "test.json", videos, tmp / "p.jsonl", "charadez"),
         ["'charadez'", "youcook2, magqa, charades, qvh"]),
        ("settings of another type", lambda: run_benchmark(model, tok, world / "test.json", videos, tmp / "p.jsonl",
                                                           {"fps": 2}), ["settings must be", "dict"]),
        ("limit 0", lambda: run_benchmark(model, tok, world / "test.json", videos, tmp / "p.jsonl", limit=0),
         ["limit", ">= 1"]),
        ("example without conversation", lambda: run_benchmark(
            model, tok, [{"question_id": "a", "video": "v0.mp4"}], videos, tmp / "p.jsonl"),
         ["example 0", "question_id 'a'", "conversation"]),
        ("example with a nan time", lambda: run_benchmark(
            model, tok, [_example("a", "v0.mp4", time=float("nan"))], videos, tmp / "p.jsonl"),
         ["example 0", "'a'", "time", "nan"]),
        ("video root missing", lambda: run_benchmark(model, tok, world / "test.json", tmp / "nope", tmp / "p.jsonl"),
         ["video root", "nope"]),
        ("unknown benchmark", lambda: read_benchmark(world / "test.json", "grounded"), ["'grounded'", "grounding"]),
        ("kv_window_frames 0", lambda: DuetSettings(kv_window_frames=0), ["kv_window_frames", ">= 1"]),
        ("fps nan", lambda: DuetSettings(fps=float("nan")), ["fps", "finite"]),
        ("empty pixel frames", lambda: list(session.push_frames(torch.zeros(0, 3, side, side, dtype=torch.uint8))),
         ["empty", "(0, 3"]),
        ("empty embeddings", lambda: list(session.push_frames(torch.zeros(0, 4, model.config.text_config.hidden_size))),
         ["empty", "(0, 4"]),
        ("float pixels", lambda: list(session.push_frames(torch.rand(2, 3, side, side))), ["float pixels", "uint8"]),
        ("message time as text", lambda: session.add_user_message("hi", "3"), ["time", "'3'"]),
        ("device nonexistent", lambda: load_model("toy", device="nonexistent"), ["'nonexistent'"]),
        ("dtype unknown", lambda: load_model("toy", dtype="float8"), ["float8"]),
    ]


API_CASE_NAMES = ["unknown preset", "settings of another type", "limit 0", "example without conversation",
                  "example with a nan time", "video root missing", "unknown benchmark", "kv_window_frames 0",
                  "fps nan", "empty pixel frames", "empty embeddings", "float pixels", "message time as text",
                  "device nonexistent", "dtype unknown"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", API_CASE_NAMES)
def test_api_bad_input_raises_input_error(name, world, toy, tmp_path):
    cases = {case: (call, fragments) for case, call, fragments in _cases_api(world, toy, tmp_path)}
    assert set(cases) == set(API_CASE_NAMES)
    call, fragments = cases[name]
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert not (tmp_path / "p.jsonl").exists()  # refused before anything was written


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("edit", "fragments"), [
    (lambda d: d["AMT7R"].update(sentences=d["AMT7R"]["sentences"][:-1]), ["video 'AMT7R'", "timestamps", "sentences"]),
    (lambda d: d["AMT7R"].pop("duration"), ["video 'AMT7R'", "missing field 'duration'"]),
    (lambda d: d["AMT7R"].update(duration="long"), ["video 'AMT7R'", "duration", "'long'"]),
    (lambda d: d["AMT7R"]["timestamps"].__setitem__(0, [1.0]), ["video 'AMT7R'", "timestamps[0]", "[start, end]"]),
])
def test_convert_names_the_entry_and_field(edit, fragments, tmp_path, capsys):
    gold = json.loads((Path(__file__).parent / "fixtures" / "gold" / "charades_test_subset.json").read_text())
    assert "AMT7R" in gold
    edit(gold)
    (tmp_path / "g.json").write_text(json.dumps(gold))
    assert cli.main(["convert", "charades", "--src", str(tmp_path / "g.json"), "--out", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mmduet convert: error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


@pytest.mark.timeout(60)
def test_convert_qvh_names_the_line(tmp_path):
    lines = (Path(__file__).parent / "fixtures" / "gold" / "qvh_val_subset.jsonl").read_text().splitlines()
    row = json.loads(lines[3])
    del row["duration"]
    lines[3] = json.dumps(row)
    (tmp_path / "q.jsonl").write_text("\n".join(lines) + "\n")
    from mmduet_core.data.convert import convert

    with pytest.raises(DataError, match=r"q\.jsonl:4: missing field 'duration'"):
        convert("qvh", tmp_path / "q.jsonl")


@pytest.mark.timeout(30)
def test_unexpected_errors_keep_their_traceback(monkeypatch, world, tmp_path):
    """Only `InputError` becomes one line: a bug (here a ValueError from deep inside) is not disguised as bad input."""
    def broken(*args, **kwargs):
        raise ValueError("a bug of ours")

    monkeypatch.setattr(checkpoint, "load_model", broken)
    with pytest.raises(ValueError, match="a bug of ours"):
        cli.main(_argv(world, tmp_path / "p.jsonl"))


# ---- the behaviours around the table -------------------------------------------------------------------------

def _infer(world: Path, out: Path, *extra: str, video_root: Path | None = None) -> list[str]:
    argv = _argv(world, out, *extra)
    if video_root is not None:
        argv[argv.index("--video-root") + 1] = str(video_root)
    return argv


@pytest.mark.timeout(120)
def test_errors_file_one_entry_per_question_and_exit_codes(world, tmp_path, capsys):
    videos = tmp_path / "videos"
    shutil.copytree(world / "videos", videos)
    (videos / "v1.mp4").unlink()
    out, errors = tmp_path / "p.jsonl", tmp_path / "p.errors.jsonl"

    def run(*extra):
        code = cli.main(_infer(world, out, *extra, video_root=videos))
        captured = capsys.readouterr()
        return code, json.loads(captured.out), captured.err

    code, summary, err = run()
    assert (code, summary["status"], summary["written"], summary["failed"]) == (1, "some failed", 3, 2)
    assert "2 of 5 examples failed" in err and str(errors) in err
    for _ in range(2):  # reruns retry the failed ones: still one entry per question_id
        code, summary, _ = run()
        assert (code, summary["failed"], summary["skipped_finished"]) == (1, 2, 3)
    entries = [json.loads(x) for x in errors.read_text().splitlines()]
    assert [e["question_id"] for e in entries] == ["v1_0", "v1_1"] and "no such video file" in entries[0]["error"]
    # the video comes back: its examples are written and their stale errors go
    shutil.copy(world / "videos" / "v1.mp4", videos / "v1.mp4")
    code, summary, _ = run()
    assert (code, summary["status"], summary["written"], summary["errors_file"]) == (0, "ok", 2, None)
    assert not errors.exists()
    # the holes filled by a resume are put back in dataset order
    assert [json.loads(x)["question_id"] for x in out.read_text().splitlines()] == \
        ["v0_0", "v0_1", "v1_0", "v1_1", "v2_0"]
    # every video gone: every example fails, the summary says so and the exit code is not 0
    empty = tmp_path / "empty"
    empty.mkdir()
    code = cli.main(_infer(world, tmp_path / "q.jsonl", video_root=empty))
    summary = json.loads(capsys.readouterr().out)
    assert (code, summary["status"], summary["written"], summary["failed"]) == (1, "all failed", 0, 5)
    # --no-resume starts the errors file over too
    (videos / "v1.mp4").unlink()
    errors.write_text('{"question_id": "v0_0", "video": "v0.mp4", "error": "old"}\n' * 3)
    code, summary, _ = run("--no-resume")
    assert [json.loads(x)["question_id"] for x in errors.read_text().splitlines()] == ["v1_0", "v1_1"]
    assert (summary["written"], summary["skipped_finished"]) == (3, 0)


@pytest.mark.timeout(120)
def test_single_process_picks_up_what_a_killed_sharded_run_left(world, toy, tmp_path):
    model, tok = toy
    reference = tmp_path / "ref.jsonl"
    run_benchmark(model, tok, world / "test.json", world / "videos", reference, "charades", progress=False)
    records = reference.read_text().splitlines(keepends=True)  # v0_0 v0_1 v1_0 v1_1 v2_0
    out = tmp_path / "p.jsonl"
    shutil.copy(tmp_path / "ref.settings.json", tmp_path / "p.settings.json")
    out.write_text(records[0])  # a single-process run's record ...
    shard_path(out, 0, 2).write_text(records[1] + records[0])  # ... a killed sharded run's, one a duplicate
    shard_path(out, 1, 2).write_text(records[4] + records[2][:30])  # ... and a torn line
    summary = run_benchmark(model, tok, world / "test.json", world / "videos", out, "charades", progress=False)
    assert (summary.skipped_finished, summary.written) == (3, 2)
    assert out.read_text() == reference.read_text()  # nothing lost, nothing twice, dataset order
    assert not shard_path(out, 0, 2).exists() and not shard_path(out, 1, 2).exists()


@pytest.mark.timeout(30)
def test_merge_keeps_records_already_in_the_output(tmp_path):
    out = tmp_path / "p.jsonl"
    out.write_text("".join(json.dumps({"question_id": q}) + "\n" for q in ("a", "b", "old")))
    shard_path(out, 0, 2).write_text(json.dumps({"question_id": "c"}) + "\n")
    shard_path(out, 1, 2).write_text(json.dumps({"question_id": "d"}) + "\n" + '{"question_id": "e"')
    assert merge_shards(out, ["a", "b", "c", "d", "e"]) == 5
    assert [json.loads(x)["question_id"] for x in out.read_text().splitlines()] == ["a", "b", "c", "d", "old"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_processes_over_an_existing_single_process_output(world, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on CPUs (gloo) over an output a single process started:
    the finished records are kept and skipped, the rest split between the two processes, one file in order."""
    out = tmp_path / "p.jsonl"
    argv = ["-m", "mmduet_core", *_argv(world, out)]
    single = subprocess.run([sys.executable, *argv, "--limit", "2"], capture_output=True, text=True, timeout=200)
    assert single.returncode == 0, single.stderr
    first = out.read_text()
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    with socket.socket() as probe:  # a free port: other test runs may be launching processes too
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launch = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port)]
    sharded = subprocess.run([*launch, *argv], capture_output=True, text=True, timeout=280)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    summary = json.loads(sharded.stdout)
    assert (summary["processes"], summary["skipped_finished"], summary["written"]) == (2, 2, 3)
    assert summary["videos_decoded"] == summary["videos"] == 2  # v1 and v2, one process each
    text = out.read_text()
    assert text.startswith(first)
    assert [json.loads(x)["question_id"] for x in text.splitlines()] == ["v0_0", "v0_1", "v1_0", "v1_1", "v2_0"]
    assert not list(tmp_path.glob("p.rank*"))
