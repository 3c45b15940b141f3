"""The harness's own datasets, registered through the same hook as any plugin's."""

from __future__ import annotations

from typing import Callable

from cmhbench.data.dataset import DatasetSpec
from cmhbench.data.iapr import IAPR_TC12
from cmhbench.data.mirflickr import MIRFLICKR
from cmhbench.data.mscoco import MSCOCO
from cmhbench.data.nuswide import NUS_WIDE_TC10, NUS_WIDE_TC21
from cmhbench.data.raw import RAW
from cmhbench.data.synthetic import SYNTHETIC
from cmhbench.data.wiki import WIKI
from cmhbench.hookspecs import hookimpl

BUILTIN = (SYNTHETIC, WIKI, MIRFLICKR, NUS_WIDE_TC10, NUS_WIDE_TC21, IAPR_TC12, MSCOCO, RAW)


@hookimpl
def cmhbench_register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    """Register the built-in datasets: synthetic, wiki, the file-based CMH benchmarks and ``raw``."""
    for spec in BUILTIN:
        register(spec)
