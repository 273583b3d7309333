"""Shared fixtures. `../shared` (the steering repo's data) is optional: tests needing it skip with a reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED = Path(os.environ.get("MMDUET_SHARED", ROOT.parent / "shared"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def shared_path(rel: str) -> Path:
    """A file under ../shared, or skip the test saying what is missing."""
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"needs {rel} from ../shared (the project's data checkout), not present here")
    return path


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES
