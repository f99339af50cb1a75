"""Sparse CPU inference for pruned models: CSR kernels where they are measured to be faster.

    fast = fggp_hub.sparsify_for_inference(model.eval())          # tuned for batch 1 and 64
    with torch.inference_mode():
        logits = fast(x)
    print(format_inference_report(inference_report(fast)))

Depends on torch only.
"""
from .errors import SparseInferenceError, SparsifyArgumentError, TrainingModeError
from .fold import conv_bn_pairs, fold_batchnorms
from .layers import MODES, SparseConv2d, SparseInferenceLayer, SparseLinear
from .sparse import format_inference_report, inference_report, sparsify_for_inference

__all__ = [
    "MODES",
    "SparseConv2d",
    "SparseInferenceError",
    "SparseInferenceLayer",
    "SparseLinear",
    "SparsifyArgumentError",
    "TrainingModeError",
    "conv_bn_pairs",
    "fold_batchnorms",
    "format_inference_report",
    "inference_report",
    "sparsify_for_inference",
]
