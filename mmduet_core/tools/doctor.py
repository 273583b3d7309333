"""Environment check: what is installed, what is missing, and how to get it (`mmduet doctor`)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Where the README tells users to put the real files (the original repository's layout).
DEFAULT_ADAPTER_DIR = Path("outputs/mmduet")
DEFAULT_DATA_ROOT = Path("datasets")
BENCHMARK_FILES = {
    "youcook2": "youcook2/annotations/val-random_prompt.json",
    "magqa": "shot2story/annotations/magqa_test.json",
    "charades": "charades/annotations/test-random_prompt.json",
    "qvhighlights": "qvh/annotations/highlight_val-random_prompt.json",
}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def java_version() -> str | None:
    """`java -version` first line, or None when no Java runtime is on PATH."""
    java = shutil.which("java")
    if not java:
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (out.stderr or out.stdout).strip().splitlines()
    return text[0] if text else "unknown"


def _module_version(name: str) -> str | None:
    if importlib.util.find_spec(name) is None:
        return None
    module = __import__(name)
    return getattr(module, "__version__", "installed")


def check_environment(adapter_dir: str | Path = DEFAULT_ADAPTER_DIR,
                      data_root: str | Path = DEFAULT_DATA_ROOT) -> list[Check]:
    """Every check the setup notebook shows, in order."""
    checks: list[Check] = []
    torch_version = _module_version("torch")
    checks.append(Check("torch", torch_version is not None, str(torch_version), "make setup"))
    if torch_version:
        import torch

        cuda = torch.cuda.is_available()
        name = (f"{torch.cuda.get_device_name(0)} (`make gpu-check` measures the 7B model's speed and memory)"
                if cuda else "none (CPU only: the toy world runs, 7B needs a GPU)")
        checks.append(Check("GPU", cuda, name, "a CUDA GPU with >= 24 GB for the 7B model in bf16"))
        flash = importlib.util.find_spec("flash_attn") is not None
        checks.append(Check("flash-attention", flash, "installed" if flash else "absent: sdpa is used",
                            "pip install -e .[gpu] (optional)"))
    for name in ("transformers", "peft", "accelerate", "papermill", "ipywidgets"):
        version = _module_version(name)
        checks.append(Check(name, version is not None, str(version), "make setup"))
    decoder = "decord" if importlib.util.find_spec("decord") else ("av (PyAV)" if importlib.util.find_spec("av") else None)
    checks.append(Check("video decoder", decoder is not None, str(decoder), "pip install decord (or av)"))
    java = java_version()
    checks.append(Check("Java (METEOR, PTB tokenizer)", java is not None, java or "not found",
                        "Debian/Ubuntu: apt-get install openjdk-17-jre-headless; conda: openjdk=17; "
                        "macOS: brew install openjdk@17"))
    meteor = _meteor_paraphrase_file()
    checks.append(Check("METEOR paraphrase table", meteor is not None and meteor.exists(),
                        str(meteor.name if meteor else "pycocoevalcap missing"), "pip install pycocoevalcap"))
    adapter_dir = Path(adapter_dir)
    has_adapter = (adapter_dir / "adapter_config.json").exists()
    checks.append(Check("MMDuet adapter", has_adapter,
                        f"{adapter_dir}/" + (" found" if has_adapter else " missing (the toy model is used)"),
                        "hf download wangyueqian/MMDuet --local-dir outputs/mmduet"))
    data_root = Path(data_root)
    for bench, rel in BENCHMARK_FILES.items():
        present = (data_root / rel).exists()
        checks.append(Check(f"{bench} annotations", present, f"{data_root / rel}" + ("" if present else " missing"),
                            "hf download --repo-type dataset wangyueqian/MMDuetIT --local-dir datasets"))
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
    checks.append(Check("Hugging Face hub", True, "offline (HF_HUB_OFFLINE set)" if offline else "online allowed"))
    return checks


def _meteor_paraphrase_file() -> Path | None:
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "meteor" / "data" / "paraphrase-en.gz"


def format_checks(checks: list[Check]) -> str:
    """A plain-text table for terminals."""
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        mark = "ok " if c.ok else "-- "
        line = f"{mark}{c.name:<{width}}  {c.detail}"
        if not c.ok and c.fix:
            line += f"\n{'':>{width + 5}}how: {c.fix}"
        lines.append(line)
    return "\n".join(lines)


def java_major(version_line: str | None) -> int | None:
    """17 from 'openjdk version "17.0.15" ...'."""
    if not version_line:
        return None
    m = re.search(r'"(\d+)(?:\.(\d+))?', version_line)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 and m.group(2) else major
