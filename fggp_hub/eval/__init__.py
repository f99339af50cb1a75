"""Evaluation: accuracy, loss, sparsity, MACs and latency of a model; card checks and updates.

    from fggp_hub.eval import evaluate_model, card_metrics, compare_with_card
    results = evaluate_model("vgg19-cifar10-s95")
    rows = compare_with_card(results, card_metrics("vgg19-cifar10-s95"))

Depends on data, hub, pruning, evaluate (metric modules in ``metrics/``, loaded by path)
and, for several processes, accelerate.
"""
from .card_compare import DEFAULT_TOLERANCES, card_metrics, compare_with_card, write_results_to_card
from .errors import CardError, EvalError
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
