"""Where a result came from: git commit, package versions, machine. Recorded beside every report."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

PACKAGES = ("mmduet", "torch", "transformers", "peft", "accelerate", "decord", "av", "pycocoevalcap",
            "papermill", "numpy")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, None when absent."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(repo: str | Path | None = None) -> str | None:
    """The checked-out commit (with `+dirty` when the tree has changes), or None outside git."""
    repo = Path(repo) if repo else Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def provenance() -> dict:
    """Commit, versions and machine in one dict (what every metrics file carries)."""
    return {
        "git_commit": git_commit(),
        "versions": package_versions(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def provenance_line(record: dict | None = None) -> str:
    """Provenance in one printed line: package, commit, the main versions, Python."""
    p = record or provenance()
    v = p.get("versions", {})
    commit = p.get("git_commit") or "no git checkout"
    return (f"mmduet {v.get('mmduet')} at commit {commit[:12]}{'+dirty' if commit.endswith('+dirty') else ''}; "
            f"torch {v.get('torch')}, transformers {v.get('transformers')}; Python {p.get('python')}")
