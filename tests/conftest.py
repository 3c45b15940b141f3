"""Shared fixtures: offline hub, real data location, isolated plugin registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DATA_ENV = "CMHBENCH_DATA"


def data_root() -> Path | None:
    """``$CMHBENCH_DATA`` if it is set and exists."""
    value = os.environ.get(DATA_ENV)
    return Path(value).resolve() if value and Path(value).is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    """The real test data folder, or skip with the reason."""
    root = data_root()
    if root is None:
        pytest.skip(f"real data not available: set {DATA_ENV} to the shared data folder (../shared/data)")
    return root


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Every test sees a registry built from its own environment."""
    from cmhbench.plugins import clear_cache

    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def test_plugins(monkeypatch):
    """Register the test-only plugins (tiny dataset, faulty methods) next to the built-ins."""
    monkeypatch.setenv("CMHBENCH_PLUGINS", "plugins_for_tests")
    from cmhbench.plugins import clear_cache

    clear_cache()
    yield
    clear_cache()
