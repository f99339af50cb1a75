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

__all__ = ["leaderboard_markdown", "leaderboard_text", "model_info_text", "percent", "size_text", "text_table",
           "zoo_markdown", "zoo_table_text", "write_zoo_markdown"]


# --------------------------------------------------------------------------- terminal text
def percent(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage (``-`` when unknown)."""
    return "-" if value is None else f"{100 * float(value):.{digits}f}%"


def size_text(n: int | None) -> str:
    """Bytes as kB / MB (``-`` when unknown)."""
    if not n:
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def text_table(headers: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    """Columns padded to their widest cell; ``right`` lists right-aligned (numeric) columns."""
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]

    def fmt(r):
        return "  ".join(str(c).rjust(widths[i]) if i in right else str(c).ljust(widths[i]) for i, c in enumerate(r)).rstrip()

    return "\n".join([fmt(headers)] + [fmt(r) for r in rows])


def zoo_table_text(records: Sequence[ModelRecord], pattern: str | None = None) -> str:
    """``fggp-hub list``: one row per model, then why the unavailable ones are not local."""
    if not records:
        return "the zoo is empty" if not pattern else f"no zoo name matches {pattern!r}"
    rows = []
    for r in records:
        own = r.accuracy_source in ("card", "eval_results.json", "config.json")
        top1 = "-" if r.top1 is None else f"{r.top1:.2f}" + ("" if own else " (index)")
        rows.append([r.name, r.backbone or "-", r.method or "-", percent(r.sparsity if r.sparsity is not None else r.target_sparsity),
                     top1, size_text(r.compact_bytes), size_text(r.dense_bytes), "yes" if r.available else "no"])
    lines = [text_table(["name", "backbone", "method", "sparsity", "top1 (%)", "compact", "dense", "available"], rows,
                        right={3, 4, 5, 6})]
    lines += [f"  {r.name}: {r.status}" for r in records if not r.available]
    return "\n".join(lines)


def model_info_text(info: dict[str, Any]) -> str:
    """``fggp-hub info``: the card's essentials, then one row per prunable layer (``info`` from :func:`.records.model_info`)."""
    where_text = f"{info['repo_id']}@{(info['revision'] or '')[:12]} on {info['hub']}" if info["repo_id"] else info["folder"]
    target = f" (target {percent(info['target_sparsity'])})" if info["target_sparsity"] is not None else ""
    lines = [
        f"{info['name']}  ({where_text})",
        f"  architecture  {info['architecture']} ({info['num_classes']} classes)",
        f"  method        {info['method']}",
        f"  dataset       {info['dataset']}",
        f"  sparsity      {percent(info['sparsity'], 4)} of prunable weights{target}, {percent(info['sparsity_all_params'])} of all parameters",
        f"  parameters    {info['nonzero_params']:,} of {info['total_params']:,} nonzero",
        "  top-1         " + ("-" if info["top1"] is None else f"{info['top1']:.2f}% (from {info['accuracy_source']})")
        + ("" if info["dense_top1"] is None else f", dense baseline {info['dense_top1']:.2f}%"),
        "  files         " + ", ".join(f"{n} {size_text(s)}" for n, s in info["files"].items()),
        f"  verified      {info['verified']}: sha256 and sparsity match config.json and the card",
        "",
    ]
    rows = [[name, "x".join(str(s) for s in layer["shape"]), f"{layer['numel']:,}", f"{layer['zeros']:,}", percent(layer["sparsity"])]
            for name, layer in info["layers"].items()]
    lines.append(text_table(["layer", "shape", "weights", "zeros", "sparsity"], rows, right={2, 3, 4}))
    return "\n".join(lines)


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
