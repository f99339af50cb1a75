"""The leaderboard: pruning methods compared per backbone, dataset, sparse start and sparsity.

:func:`leaderboard` turns :class:`~fggp_hub.hub.records.ModelRecord` s into one
:class:`LeaderboardRow` per (backbone, dataset, start, sparsity, method): mean and standard
deviation of top-1 over seeds, and the method's rank in its column. :func:`leaderboard_tables`
pivots the rows into one :class:`LeaderboardTable` per (backbone, dataset, start).
:mod:`fggp_hub.hub.render` prints both as text or markdown.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .records import ModelRecord

__all__ = ["LeaderboardRow", "LeaderboardTable", "leaderboard", "leaderboard_tables"]


@dataclass
class LeaderboardRow:
    """One method at one sparsity of one (backbone, dataset, start) column."""

    backbone: str
    dataset: str
    start: str
    sparsity: float
    method: str
    top1: float  # mean over the runs
    top1_std: float | None  # sample standard deviation; None for one run
    runs: int
    best_top1: float
    measured_sparsity: float | None
    dense_top1: float | None
    compact_bytes: int | None
    models: list[str]
    rank: int = 0  # 1 = best in its column (ties share a rank)
    delta_to_best: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LeaderboardTable:
    """The rows of one (backbone, dataset, start): methods x sparsities."""

    backbone: str
    dataset: str
    start: str
    sparsities: list[float] = field(default_factory=list)  # ascending
    methods: list[str] = field(default_factory=list)  # by mean rank over the columns they appear in
    cells: dict[tuple[str, float], LeaderboardRow] = field(default_factory=dict)  # (method, sparsity) -> row
    dense: dict[float, float] = field(default_factory=dict)  # sparsity -> dense baseline top-1


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def leaderboard(records: Iterable[ModelRecord]) -> list[LeaderboardRow]:
    """One row per (backbone, dataset, start, sparsity, method): mean top-1 over runs, rank within its column.

    Rows are sorted by backbone, dataset, start, sparsity, then rank (best first).
    Records without a top-1 or a sparsity are left out.
    """
    cells: dict[tuple, list[ModelRecord]] = {}
    for r in records:
        if r.top1 is None or r.group_sparsity is None:
            continue
        key = (r.backbone or "?", r.dataset or "unknown", r.start, round(r.group_sparsity, 4), r.method or "unknown")
        cells.setdefault(key, []).append(r)
    rows = []
    for (backbone, dataset, start, sparsity, method), group in cells.items():
        mean, std = _mean_std([r.top1 for r in group])
        dense = [r.dense_top1 for r in group if r.dense_top1 is not None]
        compact = [r.compact_bytes for r in group if r.compact_bytes]
        measured = [r.sparsity for r in group if r.sparsity is not None]
        rows.append(LeaderboardRow(
            backbone=backbone,
            dataset=dataset,
            start=start,
            sparsity=sparsity,
            method=method,
            top1=mean,
            top1_std=std,
            runs=len(group),
            best_top1=max(r.top1 for r in group),
            measured_sparsity=sum(measured) / len(measured) if measured else None,
            dense_top1=sum(dense) / len(dense) if dense else None,
            compact_bytes=int(sum(compact) / len(compact)) if compact else None,
            models=sorted(r.name for r in group),
        ))
    columns: dict[tuple, list[LeaderboardRow]] = {}
    for row in rows:
        columns.setdefault((row.backbone, row.dataset, row.start, row.sparsity), []).append(row)
    for column in columns.values():
        column.sort(key=lambda r: -r.top1)
        best = column[0].top1
        for row in column:
            row.rank = 1 + sum(1 for other in column if other.top1 > row.top1)
            row.delta_to_best = row.top1 - best
    return sorted(rows, key=lambda r: (r.backbone, r.dataset, r.start, r.sparsity, r.rank, r.method))


def leaderboard_tables(rows: Iterable[LeaderboardRow]) -> list[LeaderboardTable]:
    """Rows pivoted into one table per (backbone, dataset, start): methods x sparsities."""
    tables: dict[tuple, LeaderboardTable] = {}
    for row in rows:
        key = (row.backbone, row.dataset, row.start)
        table = tables.setdefault(key, LeaderboardTable(*key))
        if row.sparsity not in table.sparsities:
            table.sparsities.append(row.sparsity)
        if row.method not in table.methods:
            table.methods.append(row.method)
        table.cells[(row.method, row.sparsity)] = row
        if row.dense_top1 is not None:
            table.dense.setdefault(row.sparsity, row.dense_top1)
    for table in tables.values():
        table.sparsities.sort()
        # methods ordered by mean rank over the columns they appear in
        ranks = {m: [c.rank for (mm, _), c in table.cells.items() if mm == m] for m in table.methods}
        table.methods.sort(key=lambda m: (sum(ranks[m]) / len(ranks[m]), m))
    return list(tables.values())
