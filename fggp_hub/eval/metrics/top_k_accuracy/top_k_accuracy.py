"""Top-k accuracy: the share of samples whose true class is among the k highest-scored classes.

A local ``evaluate`` metric module, loaded by path so it works offline::

    metric = evaluate.load("path/to/top_k_accuracy")               # predictions are logits
    metric = evaluate.load("path/to/top_k_accuracy", "indices")    # predictions are top-k index lists
    metric.compute(predictions=..., references=..., k=(1, 5), percent=True)  # {"top1": .., "top5": ..}

Logits need the full score rows (C numbers a sample); index lists (``logits.topk(5).indices``,
best first) need only k, which is what a large evaluation should send. Ties between equal
logits go to the lower class index, as ``argmax`` does.
"""
import datasets
import evaluate
import numpy as np

_CITATION = ""

_DESCRIPTION = """
Top-k accuracy (k = 1, 5, ... at once) for image classification, from logits or from ranked class indices.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per sample, either the logits / scores of every class (config "logits", the default)
        or the indices of the highest-scored classes, best first (config "indices").
    references (`int`): the true class of each sample.
    k (`int` or sequence of `int`, default (1, 5)): the k values to report.
    percent (`bool`, default False): report percentages (0-100) instead of fractions (0-1).
Returns:
    `{"top1": ..., "top5": ...}`: one key per k.
Examples:
    >>> metric = evaluate.load("fggp_hub/eval/metrics/top_k_accuracy")
    >>> metric.compute(predictions=[[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], references=[2, 0], k=[1, 2])
    {'top1': 0.5, 'top2': 1.0}
"""

_SCORES = datasets.Features({"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")})
_INDICES = datasets.Features({"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Value("int64")})


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    def _info(self):
        if self.config_name not in ("default", "logits", "indices"):
            raise ValueError(f"top_k_accuracy has configs 'logits' (default) and 'indices', not {self.config_name!r}")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=_INDICES if self.config_name == "indices" else _SCORES,
            reference_urls=[],
        )

    def _compute(self, predictions, references, k=(1, 5), percent=False):
        ks = [int(k)] if np.isscalar(k) else [int(v) for v in k]
        refs = np.asarray(references, dtype=np.int64)
        if refs.size == 0:
            raise ValueError("top_k_accuracy got no samples")
        preds = np.asarray(predictions)
        if preds.ndim != 2 or preds.shape[0] != refs.shape[0]:
            raise ValueError(f"predictions must be one equally long row per sample, got shape {preds.shape} for {refs.shape[0]} references")
        if min(ks) < 1 or max(ks) > preds.shape[1]:
            raise ValueError(f"k must be in [1, {preds.shape[1]}] (the length of each prediction row), got {ks}")
        if self.config_name == "indices":
            ranked = preds.astype(np.int64)
        else:  # stable sort of -scores: equal scores keep the lower class index first
            ranked = np.argsort(-preds.astype(np.float64), axis=1, kind="stable")
        hit_rank = np.where(ranked == refs[:, None], np.arange(ranked.shape[1])[None, :], ranked.shape[1]).min(axis=1)
        scale = 100.0 if percent else 1.0
        return {f"top{v}": float(scale * np.count_nonzero(hit_rank < v) / refs.shape[0]) for v in ks}
