"""Leaderboards as Markdown, CSV and a single self-contained HTML page.

Output is deterministic (no timestamps, fixed ordering and float formatting), so regenerating
from the same stored results reproduces the files byte for byte.
"""

from __future__ import annotations

import html
import io
from typing import Optional

import pandas as pd

from cmhbench.leaderboard.table import DIRECTIONS, Leaderboard, Row

METRIC_TEXT = {
    "map": "mAP@all: every query counts (one with no relevant item scores 0), ties in database order",
    "map_tie_aware": "tie-aware mAP@all: expected AP over all orders of equal-distance items",
    "p@r2": "precision within Hamming radius 2",
}
DIRECTION_TEXT = {"i2t": "image→text", "t2i": "text→image"}


def metric_text(metric: str) -> str:
    """A one-line definition of a stored metric."""
    if metric.startswith("map@"):
        return f"mAP@{metric[4:]}: AP over the top {metric[4:]} with R = relevant items in the top {metric[4:]}, ties in database order"
    if metric.startswith("p@"):
        return f"precision of the top {metric[2:]} items"
    return METRIC_TEXT.get(metric, metric)


def _cell(row: Row, direction: str, bits: int) -> Optional[tuple[float, float, int]]:
    return row.cells.get((direction, bits))


def _fmt(cell: Optional[tuple[float, float, int]]) -> str:
    if cell is None:
        return "–"
    mean, std, n = cell
    return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"


def _seeds(row: Row) -> str:
    counts = sorted({c[2] for c in row.cells.values()})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def _is_best(board: Leaderboard, row: Row, direction: str, bits: int) -> bool:
    cell = _cell(row, direction, bits)
    best = board.best(direction, bits)
    return cell is not None and row.kind != "upper-bound" and best is not None and cell[0] == best


def header_lines(board: Leaderboard) -> list[str]:
    """What the table is: dataset, protocol, revision, metric, the aggregation rule."""
    lines = [
        f"Dataset `{board.dataset}`, protocol `{board.protocol}` (split checksum `{board.split_checksum}`), "
        f"data revision `{board.revision}`.",
        f"Metric: {metric_text(board.metric)}. Cells: mean ± sample standard deviation over seeds.",
        "Best label-free value per column in bold; the `labels` strategy is the supervised upper bound and is "
        "not ranked.",
    ]
    if any(row.variant_label for row in board.rows):
        lines.append(
            "A row tagged [key=value, ...] ran with those settings instead of the methods' defaults (the official "
            "settings or the documented departures); an untagged row ran at the defaults."
        )
    if board.synthetic:
        lines.insert(0, "**SYNTHETIC DATA**: generated offline; these numbers show that pipelines run, not how methods rank.")
    return lines


def to_markdown(board: Leaderboard) -> str:
    """The leaderboard (and any reported rows) as a Markdown document."""
    out = [f"# {board.dataset} leaderboard ({board.metric})", ""]
    for line in header_lines(board):
        out += [line, ""]
    columns = [(d, b) for d in DIRECTIONS for b in board.bits]
    out.append("| method | " + " | ".join(f"{d} {b}" for d, b in columns) + " | seeds |")
    out.append("|---|" + "---:|" * len(columns) + "---:|")
    for row in board.rows:
        cells = []
        for d, b in columns:
            text = _fmt(_cell(row, d, b))
            cells.append(f"**{text}**" if _is_best(board, row, d, b) else text)
        label = f"*{row.label}*" if row.kind == "upper-bound" else row.label
        out.append(f"| {label} | " + " | ".join(cells) + f" | {_seeds(row)} |")
    out.append("")
    if board.reported is not None:
        out += _reported_markdown(board)
    return "\n".join(out) + "\n"


def _reported_values(board: Leaderboard) -> tuple[list[int], list[str], dict]:
    values = board.reported.values
    bits = sorted(int(b) for b in values["bits"].unique())
    methods = list(dict.fromkeys(values["method"]))
    table = {(r.method, r.direction, int(r.bits)): float(r.value) for r in values.itertuples()}
    return bits, methods, table


def _reported_markdown(board: Leaderboard) -> list[str]:
    rep = board.reported
    bits, methods, table = _reported_values(board)
    out = [
        "## Reported in papers (not reproduced here)",
        "",
        f"From {rep.citation} Source: {rep.source}. Metric: {rep.metric_definition}. Protocol: {rep.protocol}. {rep.note}",
        "",
        "| method (reported) | " + " | ".join(f"{d} {b}" for d in DIRECTIONS for b in bits) + " |",
        "|---|" + "---:|" * (len(bits) * len(DIRECTIONS)),
    ]
    for method in methods:
        cells = [f"{table[(method, d, b)]:.3f}" if (method, d, b) in table else "–" for d in DIRECTIONS for b in bits]
        out.append(f"| {method} (reported) | " + " | ".join(cells) + " |")
    return out + [""]


def to_csv(board: Leaderboard) -> str:
    """One line per (row, direction, bits): tidy data for other tools; reported rows flagged."""
    records = []
    for row in board.rows:
        for (direction, bits), (mean, std, n) in sorted(row.cells.items()):
            records.append({
                "dataset": board.dataset, "protocol": board.protocol, "revision": board.revision, "metric": board.metric,
                "source": "reproduced", "kind": row.kind, "teacher": row.teacher, "strategy": row.strategy,
                "student": row.student, "variant": row.variant, "variant_settings": row.variant_label,
                "direction": direction, "bits": bits, "mean": round(mean, 6), "std": round(std, 6), "seeds": n,
            })
    if board.reported is not None:
        for r in board.reported.values.itertuples():
            records.append({
                "dataset": board.dataset, "protocol": r.protocol, "revision": "", "metric": board.metric,
                "source": f"reported:{board.reported.name}", "kind": "reported", "teacher": r.method, "strategy": "",
                "student": "", "variant": "", "variant_settings": "", "direction": r.direction, "bits": int(r.bits),
                "mean": float(r.value), "std": "", "seeds": "",
            })
    buffer = io.StringIO()
    pd.DataFrame.from_records(records).to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


def to_html(board: Leaderboard, figures: Optional[dict[str, str]] = None) -> str:
    """A single static HTML page: header, table, reported rows and inline SVG figures."""
    esc = html.escape
    columns = [(d, b) for d in DIRECTIONS for b in board.bits]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(board.dataset)} leaderboard ({esc(board.metric)})</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:90em}"
        "table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #ccc;padding:0.3em 0.6em}"
        "td.num{text-align:right;font-variant-numeric:tabular-nums}tr.upper-bound{font-style:italic;color:#555}"
        "tr.teacher{background:#f6f6f6}.warn{color:#a00;font-weight:bold}figure{margin:1em 0}</style>",
        "</head><body>",
        f"<h1>{esc(board.dataset)} leaderboard ({esc(board.metric)})</h1>",
    ]
    for line in header_lines(board):
        text = esc(line.replace("**", "").replace("`", ""))
        parts.append(f'<p class="warn">{text}</p>' if line.startswith("**SYNTHETIC") else f"<p>{text}</p>")
    parts.append("<table><thead><tr><th>method</th>")
    parts += [f"<th>{esc(DIRECTION_TEXT[d])} {b}</th>" for d, b in columns]
    parts.append("<th>seeds</th></tr></thead><tbody>")
    for row in board.rows:
        parts.append(f'<tr class="{row.kind}"><td>{esc(row.label)}</td>')
        for d, b in columns:
            text = esc(_fmt(_cell(row, d, b)))
            parts.append(f'<td class="num">{"<b>" + text + "</b>" if _is_best(board, row, d, b) else text}</td>')
        parts.append(f'<td class="num">{_seeds(row)}</td></tr>')
    parts.append("</tbody></table>")
    if board.reported is not None:
        rep = board.reported
        bits, methods, table = _reported_values(board)
        parts.append("<h2>Reported in papers (not reproduced here)</h2>")
        parts.append(f"<p>From {esc(rep.citation)} Metric: {esc(rep.metric_definition)}. Protocol: {esc(rep.protocol)}. {esc(rep.note)}</p>")
        parts.append("<table><thead><tr><th>method (reported)</th>")
        parts += [f"<th>{esc(DIRECTION_TEXT[d])} {b}</th>" for d in DIRECTIONS for b in bits]
        parts.append("</tr></thead><tbody>")
        for method in methods:
            cells = "".join(
                f'<td class="num">{table[(method, d, b)]:.3f}</td>' if (method, d, b) in table else '<td class="num">–</td>'
                for d in DIRECTIONS for b in bits
            )
            parts.append(f"<tr><td>{esc(method)} (reported)</td>{cells}</tr>")
        parts.append("</tbody></table>")
    for title, svg in (figures or {}).items():
        parts.append(f"<figure><figcaption>{esc(title)}</figcaption>{svg}</figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
