"""Evaluation: accuracy, loss, sparsity, MACs and latency of a model; card checks and updates.

    from fggp_hub.eval import evaluate_model, card_metrics, compare_with_card
    results = evaluate_model("vgg19-cifar10-s95")
    rows = compare_with_card(results, card_metrics("vgg19-cifar10-s95"))

``card_metrics``, ``write_results_to_card`` and ``CardError`` live in the card module,
:mod:`fggp_hub.hub.card` (with :mod:`fggp_hub.hub.errors`), and are re-exported here.
Depends on data, hub, pruning, evaluate (metric modules in ``metrics/``, loaded by path)
and, for several processes, accelerate.
"""
from ..hub.card import card_metrics, write_results_to_card
from ..hub.errors import CardError
from .card_compare import DEFAULT_TOLERANCES, compare_with_card
from .errors import EvalError
from .evaluate import METRICS_DIR, dataset_label, evaluate_model, load_metric
from ..pruning.flops import count_macs
from .latency import measure_latency
from .results import save_results

__all__ = [
    "DEFAULT_TOLERANCES",
    "METRICS_DIR",
    "CardError",
    "EvalError",
    "card_metrics",
    "compare_with_card",
    "count_macs",
    "dataset_label",
    "evaluate_model",
    "load_metric",
    "measure_latency",
    "save_results",
    "write_results_to_card",
]
