"""Plots from stored results only: mAP against code length, precision-recall and precision@K.

Every figure is written as PNG and SVG. SVG output is made deterministic (fixed id salt, no
date or creator metadata) so that regenerated figures compare equal to committed ones.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cmhbench.files import atomic_open  # noqa: E402
from cmhbench.leaderboard.render import DIRECTION_TEXT, metric_text  # noqa: E402
from cmhbench.leaderboard.table import DIRECTIONS, Leaderboard, Row  # noqa: E402

STYLE = {"svg.hashsalt": "cmhbench", "svg.fonttype": "none", "font.size": 9, "figure.dpi": 100}


def _lines(board: Leaderboard, top: int) -> list[Row]:
    """The ``top`` best label-free rows by mean score, plus the upper-bound rows for reference."""
    ranked = sorted((r for r in board.rows if r.kind != "upper-bound" and not math.isnan(r.score())), key=lambda r: (-r.score(), r.label))
    return ranked[:top] + [r for r in board.rows if r.kind == "upper-bound"]


def _save(fig, out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    png, svg = out_dir / f"{stem}.png", out_dir / f"{stem}.svg"
    with atomic_open(png, binary=True, fsync=False) as fh:
        fig.savefig(fh, format="png", metadata={"Software": None}, bbox_inches="tight")
    with atomic_open(svg, binary=True, fsync=False) as fh:
        fig.savefig(fh, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    plt.close(fig)
    return png, svg


def _style(row: Row) -> dict:
    return {"linestyle": "--" if row.kind == "upper-bound" else (":" if row.kind == "teacher" else "-"), "marker": "o", "markersize": 3}


def plot_map_vs_bits(board: Leaderboard, out_dir: Path, top: int = 10) -> tuple[Path, Path]:
    """mAP (mean ± std over seeds) against code length, one panel per direction."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
        for ax, direction in zip(axes, DIRECTIONS):
            for row in _lines(board, top):
                bits = [b for b in board.bits if (direction, b) in row.cells]
                means = [row.cells[(direction, b)][0] for b in bits]
                stds = [row.cells[(direction, b)][1] for b in bits]
                ax.errorbar(bits, means, yerr=stds, label=row.label, capsize=2, **_style(row))
            ax.set_xscale("log", base=2)
            ax.set_xticks(board.bits, [str(b) for b in board.bits])
            ax.set_xlabel("code length (bits)")
            ax.set_title(DIRECTION_TEXT[direction])
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(board.metric)
        axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.suptitle(f"{board.dataset} ({board.protocol}): {metric_text(board.metric)}", fontsize=9)
        return _save(fig, out_dir, f"{board.dataset}-{board.metric.replace('@', 'at')}-vs-bits")


def plot_curves(board: Leaderboard, kind: str, bits: int, out_dir: Path, top: int = 10) -> Optional[tuple[Path, Path]]:
    """``kind`` ``pr`` (precision-recall over Hamming radii) or ``pk`` (precision@K) at ``bits``."""
    field = "pr_precision" if kind == "pr" else "pk_precision"
    rows = [r for r in _lines(board, top) if any(c.get(field) for c in r.curves.get(bits, {}).values())]
    if not rows:
        return None
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
        for ax, direction in zip(axes, DIRECTIONS):
            for row in rows:
                curve = row.curves[bits].get(direction)
                if not curve:
                    continue
                if kind == "pr":
                    ax.plot(curve["pr_recall"], curve["pr_precision"], label=row.label, **_style(row))
                elif curve["pk_k"]:
                    ax.plot(curve["pk_k"], curve["pk_precision"], label=row.label, **_style(row))
            if kind == "pr":
                ax.set_xlabel("recall (items within Hamming radius r, r = 0..bits)")
            else:
                ax.set_xscale("log")
                ax.set_xlabel("K (top retrieved items)")
            ax.set_title(f"{DIRECTION_TEXT[direction]}, {bits} bits")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("precision")
        axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.suptitle(f"{board.dataset} ({board.protocol}): {'precision-recall' if kind == 'pr' else 'precision@K'}", fontsize=9)
        return _save(fig, out_dir, f"{board.dataset}-{kind}-{bits}bits")


def all_figures(board: Leaderboard, out_dir: Path, top: int = 10, curve_bits: Optional[int] = None) -> dict[str, Path]:
    """Every plot of a board; returns caption -> SVG path (PNG beside it)."""
    figures = {f"{board.metric} against code length": plot_map_vs_bits(board, out_dir, top)[1]}
    chosen = curve_bits if curve_bits is not None else board.bits[len(board.bits) // 2]
    for kind, caption in (("pr", "precision-recall"), ("pk", "precision@K")):
        saved = plot_curves(board, kind, chosen, out_dir, top)
        if saved:
            figures[f"{caption} at {chosen} bits"] = saved[1]
    return figures


def inline_svg(path: Path) -> str:
    """An SVG file's ``<svg>`` element, for embedding in HTML."""
    text = path.read_text(encoding="utf-8")
    return re.sub(r"^.*?(<svg\b)", r"\1", text, count=1, flags=re.S)
