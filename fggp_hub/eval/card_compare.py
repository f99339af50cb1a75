"""How measured results compare with what a model card claims: ``fggp-hub eval --check``.

:func:`compare_with_card` lines :func:`~fggp_hub.eval.evaluate_model`'s results up with
:func:`card_metrics` (within :data:`DEFAULT_TOLERANCES`, or ``--tolerance`` values read by
:func:`parse_tolerances`) and :func:`comparison_text` prints the table. Reading a card and
writing results back belong to the card module, :mod:`fggp_hub.hub.card`;
:func:`card_metrics` and :func:`write_results_to_card` are re-exported from it here.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..hub.card import card_metrics, write_results_to_card
from .errors import EvalError

__all__ = ["DEFAULT_TOLERANCES", "card_metrics", "compare_with_card", "comparison_text", "parse_tolerances",
           "write_results_to_card"]


#: Absolute tolerances of :func:`compare_with_card`. A CPU evaluation of the same weights on the
#: same images matches the card to float noise; 0.1 points of accuracy leave room for GPU kernels.
DEFAULT_TOLERANCES: dict[str, float] = {
    "top1": 0.1,
    "top5": 0.1,
    "loss": 1e-3,
    "sparsity": 1e-6,
    "sparsity_all_params": 1e-6,
    "nonzero_params": 0,
    "total_params": 0,
    "num_images": 0,
}
#: Compared for equality (strings).
_EXACT = ("dataset", "split")


# --------------------------------------------------------------------------- comparing
def compare_with_card(measured: Mapping[str, Any], card: Mapping[str, Any], tolerances: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """One row ``{metric, card, measured, diff, tolerance, ok}`` per metric both sides have.

    ``diff`` is measured - card; ``ok`` means ``|diff| <= tolerance``
    (:data:`DEFAULT_TOLERANCES`, overridden per key by ``tolerances``). ``dataset`` and
    ``split`` must be equal. A different ``num_images`` is flagged: the card's accuracy
    was measured on other images.
    """
    tol = {**DEFAULT_TOLERANCES, **dict(tolerances or {})}
    rows = []
    for key in [k for k in tol if k not in _EXACT] + [k for k in _EXACT if k not in tol]:
        have, want = measured.get(key), card.get(key)
        if have is None or want is None:
            continue
        if key in _EXACT and key not in (tolerances or {}):
            rows.append({"metric": key, "card": want, "measured": have, "diff": None, "tolerance": None, "ok": have == want})
            continue
        diff = float(have) - float(want)
        limit = float(tol[key])
        rows.append({"metric": key, "card": want, "measured": have, "diff": diff, "tolerance": limit, "ok": abs(diff) <= limit + 1e-12})
    return rows


def parse_tolerances(values: Sequence[str]) -> dict[str, float] | None:
    """``["0.2", "sparsity=1e-6"]`` -> ``{"top1": 0.2, "top5": 0.2, "sparsity": 1e-6}`` (a bare number is for accuracies)."""
    out: dict[str, float] = {}
    for raw in values:
        key, eq, value = raw.partition("=")
        if not eq:
            key, value = "", raw
        try:
            number = float(value)
        except ValueError:
            raise EvalError(f"--tolerance {raw!r}: expected a number or METRIC=NUMBER, e.g. 0.5 or top1=0.5") from None
        if not math.isfinite(number) or number < 0:
            raise EvalError(f"--tolerance {raw!r}: must be a finite number >= 0")
        if key:
            out[key.strip()] = number
        else:
            out["top1"] = out["top5"] = number
    return out or None


def _fmt_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1 else f"{value:,.4f}".rstrip("0").rstrip(".")
    return str(value)


#: Numbers in evaluate_model's results that describe the run, not the model (shown with --json only).
_SETTINGS = {"batch_size", "num_processes", "torch_threads", "dataset_size", "prunable_params"}


def comparison_text(rows: Sequence[Mapping[str, Any]], measured: Mapping[str, Any]) -> str:
    """``fggp-hub eval``'s table of :func:`compare_with_card` rows, then the measured numbers the card has not."""
    from ..hub.render import text_table

    compared = {r["metric"] for r in rows}
    lines = [text_table(
        ["metric", "card", "measured", "diff", "tolerance", ""],
        [[r["metric"], _fmt_value(r.get("card")), _fmt_value(r.get("measured")), _fmt_value(r.get("diff")),
          _fmt_value(r.get("tolerance")), "ok" if r.get("ok") else "DIFFERS"] for r in rows],
        right={1, 2, 3, 4},
    )]
    extra = {k: v for k, v in measured.items()
             if k not in compared and k not in _SETTINGS and isinstance(v, (int, float)) and not isinstance(v, bool)}
    if extra:
        lines += ["", "measured only:"] + [f"  {k:<26}{_fmt_value(v)}" for k, v in extra.items()]
    return "\n".join(lines)
