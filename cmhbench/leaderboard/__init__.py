"""Leaderboards: pivot tables, bundled reported numbers, plots and a static HTML page."""

from cmhbench.leaderboard.table import Leaderboard, Row, build_leaderboards

__all__ = ["Leaderboard", "Row", "build_leaderboards"]
