"""What a result records about the software and hardware that produced it."""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

import cmhbench


@lru_cache(maxsize=1)
def git_commit() -> Optional[str]:
    """The commit of the cmhbench checkout this code runs from, or None outside a git checkout.

    ``+dirty`` is appended when the code differs from the commit: a tracked file has uncommitted
    changes, or an untracked, not ignored Python file exists (a new plugin module, say). Other
    untracked files (results a sweep is writing into the checkout) do not count."""
    root = Path(cmhbench.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=all"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.splitlines()
        dirty = [line for line in dirty if not line.startswith("??") or line.rstrip().endswith(".py")]
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def describe_device(device: torch.device) -> str:
    """``cpu (N threads)`` or ``cuda:0 (GPU name)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"cpu ({torch.get_num_threads()} threads, {platform.machine()})"


def environment(device: torch.device, plugins: dict[str, str]) -> dict[str, Any]:
    """Versions of cmhbench, its plugins and main libraries, the git commit and the device."""
    return {
        "cmhbench": cmhbench.__version__,
        "git_commit": git_commit(),
        "git_dirty": None if git_commit() is None else git_commit().endswith("+dirty"),
        "plugins": dict(sorted(plugins.items())),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "device": describe_device(device),
    }
