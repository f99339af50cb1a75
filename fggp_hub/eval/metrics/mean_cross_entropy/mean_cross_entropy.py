"""Mean cross-entropy of logits against integer labels (no label smoothing), in float64.

A local ``evaluate`` metric module, loaded by path so it works offline::

    metric = evaluate.load("path/to/mean_cross_entropy")
    metric.compute(predictions=logits, references=labels)   # {"loss": ...}

It equals ``torch.nn.functional.cross_entropy(logits.double(), labels)``: the test loss
a training run reports, computed once over all samples instead of averaged per batch.
"""
import datasets
import evaluate
import numpy as np

_CITATION = ""

_DESCRIPTION = """
Mean cross-entropy (negative log-likelihood of the true class under softmax(logits)), in nats.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: the logits of every class, one row per sample.
    references (`int`): the true class of each sample.
Returns:
    `{"loss": mean cross-entropy}`.
Examples:
    >>> metric = evaluate.load("fggp_hub/eval/metrics/mean_cross_entropy")
    >>> round(metric.compute(predictions=[[0.0, 0.0]], references=[1])["loss"], 6)
    0.693147
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanCrossEntropy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}),
            reference_urls=[],
        )

    def _compute(self, predictions, references):
        logits = np.asarray(predictions, dtype=np.float64)
        refs = np.asarray(references, dtype=np.int64)
        if refs.size == 0:
            raise ValueError("mean_cross_entropy got no samples")
        if logits.ndim != 2 or logits.shape[0] != refs.shape[0]:
            raise ValueError(f"predictions must be one logit row per sample, got shape {logits.shape} for {refs.shape[0]} references")
        if refs.min() < 0 or refs.max() >= logits.shape[1]:
            raise ValueError(f"references must be class indices in [0, {logits.shape[1]}), got {refs.min()}..{refs.max()}")
        top = logits.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        return {"loss": float(np.mean(log_norm - logits[np.arange(refs.shape[0]), refs]))}
