"""Sweeps: grids of runs from a TOML/YAML file, executed resumably on one machine or Ray."""

from cmhbench.sweep.execute import SweepExecutor, SweepReport
from cmhbench.sweep.spec import Sweep, load_sweep

__all__ = ["Sweep", "SweepExecutor", "SweepReport", "load_sweep"]
