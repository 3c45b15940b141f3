"""Commands that never train do not import the heavy libraries (torch alone takes ~1.7 s to import).

The times themselves are measured by ``benchmarks/startup.py``; this test guards the imports, so
that a module-level ``import torch`` in a plugin or a core module cannot creep back in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HEAVY = ("torch", "pandas", "numba", "matplotlib", "scipy", "sklearn", "timm", "sentence_transformers")


def imported_after(code: str) -> set[str]:
    """The heavy top-level modules imported by a fresh interpreter running ``code``."""
    probe = code + f"\nimport sys, json\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def cli_imports(*args: str) -> set[str]:
    code = ("import sys\nfrom cmhbench.cli import app\n"
            f"try:\n    app({list(args)!r}, standalone_mode=False)\nexcept SystemExit:\n    pass")
    return imported_after(code)


def test_building_the_registry_imports_no_heavy_library():
    assert imported_after("from cmhbench.plugins import get_registry\nget_registry()") == set()


@pytest.mark.parametrize("args", [["--help"], ["list"], ["show", "djsrh"], ["list", "ucch", "--json"], ["data", "list"]])
def test_listing_commands_import_no_heavy_library(args):
    assert cli_imports(*args) == set()


def test_leaderboard_needs_pandas_only():
    synthetic = Path(__file__).resolve().parent.parent / "leaderboards" / "synthetic" / "results"
    assert cli_imports("leaderboard", "--results", str(synthetic)) <= {"pandas"}


def test_eval_on_the_cpu_does_not_import_torch(tmp_path):
    from cmhbench.evaluation.metrics import GPU_DEVICE_FILES

    if not sys.platform.startswith("linux") or any(os.path.exists(f) for f in GPU_DEVICE_FILES):
        pytest.skip("a GPU driver is present: `eval --device auto` asks torch whether CUDA works")
    rng = np.random.default_rng(0)
    codes = lambda n: np.where(rng.random((n, 8)) < 0.5, -1, 1)  # noqa: E731
    np.savez(tmp_path / "c.npz", query_image_codes=codes(3), query_text_codes=codes(3), db_image_codes=codes(9),
             db_text_codes=codes(9), query_labels=np.eye(3, 2, dtype=np.uint8), db_labels=np.ones((9, 2), np.uint8))
    assert "torch" not in cli_imports("eval", str(tmp_path / "c.npz"), "--json")


def test_methods_still_train_after_the_lazy_imports(test_plugins):
    """The lazily defined network classes build and run (DADH, SSAH, UCCH, UGACH define nn.Modules)."""
    from cmhbench_plugins.students.dadh import _Branch
    from cmhbench_plugins.teachers.ucch import _Head

    head = _Head(6, 2, 8, 4)
    out = head(__import__("torch").randn(3, 6))
    assert out.shape == (3, 4) and isinstance(head, _Head.cls())
    assert _Branch([6, 4, 4], 4)(__import__("torch").randn(2, 6)).shape == (2, 4)
