"""The harness's own datasets, registered through the same hook as any plugin's."""

from __future__ import annotations

from typing import Callable

from cmhbench.data.dataset import DatasetSpec
from cmhbench.data.synthetic import SYNTHETIC
from cmhbench.data.wiki import WIKI
from cmhbench.hookspecs import hookimpl


@hookimpl
def cmhbench_register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    """Register ``synthetic`` and ``wiki``."""
    register(SYNTHETIC)
    register(WIKI)
