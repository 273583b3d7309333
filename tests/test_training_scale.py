"""Training on several processes is the same training, proven on CPU: `accelerate launch --multi_gpu` starts two
processes that synchronise gradients over gloo, and their losses equal one process's at the same global batch."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from mmduet_core.toyworld import make_toyworld

ROOT = Path(__file__).resolve().parent.parent
ACCELERATE = Path(sys.executable).parent / "accelerate"
STEPS = 3  # per stage: the first step has learning rate 0 (warm-up), so step 3 depends on step 2's synced update

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate's launcher is not installed")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args: list[str], *launcher: str, cwd: Path = ROOT, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [str(ACCELERATE), "launch", *launcher, "--main_process_port", str(_free_port()), "-m", "mmduet_core", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A full toy world (what `train --toy` asks for), its mixture without dense captioning: that dataset draws
    an instruction at random on every access (as upstream), so its text depends on which process reads an
    example, and exact equality would not hold for reasons unrelated to gradient synchronisation."""
    root = tmp_path_factory.mktemp("world")
    make_toyworld(root, seed=0, progress=False)
    mixture = json.loads((root / "datasets.json").read_text())
    (root / "datasets.json").write_text(json.dumps([d for d in mixture if "DenseVideo" not in d["class"]]))
    return root


@pytest.fixture(scope="module")
def two_processes(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    run = _launch(["train", "--toy", "--world", str(world), "--out", str(out), "--max-steps", str(STEPS)],
                  "--multi_gpu", "--num_processes", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    return out


@pytest.mark.timeout(1800)
def test_two_processes_give_the_losses_of_one_at_the_same_global_batch(world, two_processes, tmp_path):
    # one process, batch 16 x 2 accumulation steps = the two processes' 2 x 16
    script = ("import torch; torch.set_num_threads(1)\n"
              "from dataclasses import replace\n"
              "from mmduet_core.training import TOY_TRAIN, train_toy\n"
              f"train_toy({str(world)!r}, {str(tmp_path / 'one')!r}, replace(TOY_TRAIN, grad_accumulation=2), "
              f"max_steps={STEPS}, progress=False)\n")
    one = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=1200)
    assert one.returncode == 0, one.stderr[-3000:]
    two = json.loads((two_processes / "loss_history.json").read_text())
    ref = json.loads((tmp_path / "one" / "loss_history.json").read_text())
    assert [(r["step"], r["stage"]) for r in two] == [(r["step"], r["stage"]) for r in ref]
    assert len(two) == 2 * STEPS  # both stages logged every step
    for a, b in zip(two, ref, strict=True):
        for key in ("loss", "lm_loss", "video_loss", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-4), (a["step"], key, a[key], b[key])
    # the losses move: the comparison is not between two untrained models
    assert two[-1]["loss"] != pytest.approx(two[0]["loss"], rel=1e-3)


def test_two_processes_write_one_checkpoint_with_both_heads(two_processes):
    final = two_processes / "final"
    assert sorted(p.name for p in two_processes.iterdir() if p.name.startswith(("final", "stage1"))) == \
        ["final", "stage1-flash"]
    assert not list(two_processes.rglob("*.tmp"))
    with safe_open(str(final / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("informative_head" in k for k in keys) and any("relevance_head" in k for k in keys)
    assert json.loads((final / "loss_history.json").read_text())[-1]["step"] == 2 * STEPS


@pytest.mark.timeout(900)
def test_lora_training_on_two_processes_saves_adapter_and_heads(world, tmp_path):
    """The recipe's path (LoRA, heads and projector saved with it) on the shipped toy model as the base."""
    out = tmp_path / "lora"
    run = _launch(["train", "--config", "datasets.json", "--model", "toy", "--max-steps", "2", "--out", str(out)],
                  "--multi_gpu", "--num_processes", "2", cwd=world)
    assert run.returncode == 0, run.stderr[-3000:]
    assert '"processes": 2' in run.stdout
    with safe_open(str(out / "final" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("lora_A" in k for k in keys) and any("lora_B" in k for k in keys)
    assert any("informative_head" in k for k in keys) and any("relevance_head" in k for k in keys)
    assert len(json.loads((out / "loss_history.json").read_text())) == 2


@pytest.mark.timeout(300)
def test_cpu_flag_with_several_processes_fails_loudly(world, tmp_path):
    """`--cpu --num_processes 2` makes accelerate start one process; training refuses instead of pretending."""
    run = _launch(["train", "--toy", "--world", str(world), "--out", str(tmp_path / "cpu"), "--max-steps", "1"],
                  "--cpu", "--num_processes", "2")
    assert run.returncode != 0
    assert "starts a single process" in run.stderr and "--multi_gpu" in run.stderr
    assert not (tmp_path / "cpu" / "final").exists()


@pytest.mark.timeout(900)
def test_deepspeed_config_is_accepted(world, tmp_path):
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("DeepSpeed is not installed (pip install 'mmduet[gpu]' on a GPU machine)")
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip(f"DeepSpeed ZeRO-2 over 2 processes needs 2 GPUs here; {torch.cuda.device_count()} found")
    out = tmp_path / "ds"
    run = _launch(["train", "--config", "datasets.json", "--model", "toy", "--max-steps", "1", "--out", str(out),
                   "--deepspeed", str(ROOT / "configs" / "deepspeed" / "zero2.json")],
                  "--multi_gpu", "--num_processes", "2", cwd=world)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (out / "final" / "adapter_model.safetensors").exists()
