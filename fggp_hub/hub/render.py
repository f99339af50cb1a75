"""Text and markdown of the zoo: the leaderboard tables (terminal and docs) and ``model_cards/ZOO.md``.

:func:`leaderboard_text` is what ``fggp-hub list --leaderboard`` prints, :func:`leaderboard_markdown`
the same tables in markdown; :func:`zoo_markdown` renders ``model_cards/ZOO.md`` (the models table,
then the leaderboard) and :func:`write_zoo_markdown` writes it atomically.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._io import write_text_atomic
from .leaderboard import LeaderboardRow, LeaderboardTable, leaderboard, leaderboard_tables
from .records import ModelRecord
from .zoo import sparsity_tag

__all__ = ["leaderboard_markdown", "leaderboard_text", "zoo_markdown", "write_zoo_markdown"]


def _cell(row: LeaderboardRow | None, markdown: bool) -> str:
    if row is None:
        return "–" if markdown else "-"
    text = f"{row.top1:.2f}"
    if row.top1_std is not None:
        text += f" ± {row.top1_std:.2f}"
    if row.runs > 1:
        text += f" (n={row.runs})"
    if markdown and row.rank == 1:
        text = f"**{text}**"
    elif not markdown and row.rank == 1:
        text += " *"
    return text


def _title(table: LeaderboardTable) -> str:
    start = "dense start" if table.start == "dense" else f"sparse start ({table.start.replace('erk', 'ERK ')}%)"
    return f"{table.backbone} on {table.dataset}, {start}"


def leaderboard_markdown(rows: list[LeaderboardRow]) -> str:
    """Markdown tables (one per backbone/dataset/start): top-1 (%) of each method at each sparsity, best in bold."""
    if not rows:
        return "_No results yet: the zoo has no models with a recorded top-1 accuracy._\n"
    out = []
    for table in leaderboard_tables(rows):
        heads = [f"{sparsity_tag(s)}% sparsity" for s in table.sparsities]
        out.append(f"### {_title(table)}\n")
        out.append("| Method | " + " | ".join(heads) + " |")
        out.append("|---|" + "---:|" * len(heads))
        if table.dense:
            out.append("| dense baseline | " + " | ".join(
                f"{table.dense[s]:.2f}" if s in table.dense else "–" for s in table.sparsities) + " |")
        for method in table.methods:
            out.append(f"| {method} | " + " | ".join(_cell(table.cells.get((method, s)), True) for s in table.sparsities) + " |")
        out.append("")
    out.append(f"Top-1 accuracy (%) on the test split; {_spread_note(rows)}; the best method of each column in bold.\n")
    return "\n".join(out)


def leaderboard_text(rows: list[LeaderboardRow]) -> str:
    """The same tables as plain aligned text for a terminal (best of each column marked ``*``)."""
    if not rows:
        return "no results: no model in the zoo (or the given folders) has a recorded top-1 accuracy"
    blocks = []
    for table in leaderboard_tables(rows):
        heads = ["method"] + [f"s={sparsity_tag(s)}%" for s in table.sparsities]
        body = []
        if table.dense:
            body.append(["dense baseline"] + [f"{table.dense[s]:.2f}" if s in table.dense else "-" for s in table.sparsities])
        body += [[m] + [_cell(table.cells.get((m, s)), False) for s in table.sparsities] for m in table.methods]
        widths = [max(len(r[i]) for r in [heads] + body) for i in range(len(heads))]
        lines = [_title(table), "  ".join(h.ljust(widths[i]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(heads))]
        lines += ["  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)) for r in body]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + f"\n\ntop-1 accuracy (%), {_spread_note(rows)}; * best in its column"


def _spread_note(rows: list[LeaderboardRow]) -> str:
    """What a cell shows: a footer must not promise a ± that no cell has."""
    if any(row.runs > 1 for row in rows):
        return "mean ± sample standard deviation over the n runs (seeds) of a cell where n > 1, else one run"
    return "one run per cell, so no spread over seeds is shown"


# --------------------------------------------------------------------------- ZOO.md
def _fmt_bytes(n: int | None) -> str:
    if not n:
        return "–"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def zoo_markdown(records: Sequence[ModelRecord], *, title: str = "fggp-hub model zoo", command: str | None = None) -> str:
    """The text of ``model_cards/ZOO.md``: the models table, then the leaderboard."""
    lines = [f"# {title}", ""]
    lines.append("Sparse checkpoints produced with fggp-hub, and how the pruning methods compare. "
                 "Generated from the models' cards" + (f" with `{command}`" if command else "") + "; do not edit by hand.")
    lines.append("")
    if any(r.dataset and "JPEG" in r.dataset for r in records):
        lines += ["Results on \"CIFAR-10 (JPEG-q75 copy)\" come from a JPEG-degraded copy of CIFAR-10: compare them "
                  "with each other, not with published CIFAR-10 figures.", ""]
    lines += ["## Models", ""]
    if records:
        lines.append("| Model | Backbone | Method | Sparsity | Top-1 (%) | Compact file | Dense file | Load |")
        lines.append("|---|---|---|---:|---:|---:|---:|---|")
        for r in sorted(records, key=lambda r: (r.backbone or "", r.group_sparsity or 0, r.method or "", r.name)):
            load = f'`fggp_hub.load("{r.name}")`' if r.source == "zoo" else "local export"
            top1 = "–" if r.top1 is None else f"{r.top1:.2f}"
            lines.append(
                f"| `{r.name}` | {r.backbone or '–'} | {r.method or '–'} | {_pct(r.sparsity if r.sparsity is not None else r.target_sparsity)} | "
                f"{top1} | {_fmt_bytes(r.compact_bytes)} | {_fmt_bytes(r.dense_bytes)} | {load} |"
            )
    else:
        lines.append("_The zoo is empty._")
    lines += ["", "## Leaderboard", "", leaderboard_markdown(leaderboard(records))]
    return "\n".join(lines).rstrip() + "\n"


def write_zoo_markdown(path: str | os.PathLike, records: Sequence[ModelRecord], **kwargs: Any) -> Path:
    """Write :func:`zoo_markdown` to ``path`` atomically (temporary name, then rename)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, zoo_markdown(records, **kwargs))
    return path
