"""Shared test helpers: one way to load JSON events, from events/ (console samples) or tests/events/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
EVENT_DIRS = (REPO_ROOT / "events", REPO_ROOT / "tests" / "events")


def load_event(name: str) -> dict:
    for directory in EVENT_DIRS:
        path = directory / name
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
    raise FileNotFoundError(f"no event {name} under events/ or tests/events/")


@pytest.fixture
def event():
    return load_event
