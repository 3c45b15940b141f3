"""Evaluation: Hamming ranking and the contract's metrics, on CUDA when present, else CPU.

The names below are imported on first use (PEP 562), so that importing
:mod:`cmhbench.evaluation.codes` does not load the numba kernels.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "check_codes": "codes", "hamming_distances": "codes", "sign_codes": "codes",
    "CodeSet": "crossmodal", "evaluate_code_set": "crossmodal", "retrieval_metrics": "metrics",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
