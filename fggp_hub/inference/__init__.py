"""Sparse CPU inference for pruned models: sparse kernels where they are measured to be faster.

    fast = fggp_hub.sparsify_for_inference(model.eval())          # tuned for batch 1 and 64
    with torch.inference_mode():
        logits = fast(x)
    print(format_inference_report(inference_report(fast)))

Depends on torch only; the native direct kernel is built with the system C++ compiler
on first use (see :mod:`fggp_hub.inference.native`), and without it the torch kernels run.
"""
from .errors import SparseInferenceError, SparsifyArgumentError, TrainingModeError
from .fold import conv_bn_pairs, conv_relu_pairs, fold_batchnorms
from .layers import MODES, ChwnGlobalAvgPool2d, ChwnMaxPool2d, SparseConv2d, SparseInferenceLayer, SparseLinear
from .native import native_status
from .sparse import format_inference_report, inference_report, sparsify_for_inference

__all__ = [
    "MODES",
    "ChwnGlobalAvgPool2d",
    "ChwnMaxPool2d",
    "SparseConv2d",
    "SparseInferenceError",
    "SparseInferenceLayer",
    "SparseLinear",
    "SparsifyArgumentError",
    "TrainingModeError",
    "conv_bn_pairs",
    "conv_relu_pairs",
    "fold_batchnorms",
    "format_inference_report",
    "inference_report",
    "native_status",
    "sparsify_for_inference",
]
