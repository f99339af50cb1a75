"""Inference-only Conv2d / Linear that run either a dense kernel or a CSR sparse one.

The sparse kernel multiplies the CSR weight (C_out x C_in*kh*kw) by im2col
columns. torch's CPU CSR @ dense product (MKL sparse on the PyPI build) is fast
only for a row-major dense operand, so the columns are laid out as
(C_in*kh*kw) x (H_out*W_out*B): batch innermost, which also makes the im2col
copy run over long contiguous stretches when B > 1. Which kernel a layer runs
is decided per batch size (``decisions``), by measurement in
:func:`fggp_hub.inference.sparsify_for_inference`.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import TrainingModeError

__all__ = ["MODES", "SparseInferenceLayer", "SparseConv2d", "SparseLinear"]

#: Kernels a layer can run.
MODES = ("dense", "sparse")

# F.unfold beats the strided im2col copy at batch 1 on tiny feature maps (measured:
# 512 channels at 2x2 / 4x4), where the strided copy moves runs of only 2-4 floats.
_UNFOLD_MAX_PIXELS = 16


class SparseInferenceLayer(nn.Module):
    """Shared part: weight storage in both layouts, the per-batch-size kernel choice, guards.

    Buffers are non-persistent: this module is a runtime form of a model, not a
    checkpoint format (export the original model to save it).
    """

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        weight = weight.detach()
        with warnings.catch_warnings():  # "sparse CSR support is in beta": these kernels are tested here
            warnings.simplefilter("ignore", UserWarning)
            csr = weight.reshape(weight.shape[0], -1).to_sparse_csr()
        # Shares storage with the layer it replaces (a deep copy already, unless inplace=True).
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach(), persistent=False)
        # int32 indices: MKL's LP64 interface takes them without a conversion per call.
        self.register_buffer("crow_indices", csr.crow_indices().to(torch.int32), persistent=False)
        self.register_buffer("col_indices", csr.col_indices().to(torch.int32), persistent=False)
        self.register_buffer("values", csr.values().clone(), persistent=False)
        self.matrix_shape = (weight.shape[0], weight[0].numel())
        self.nnz = int(csr.values().numel())
        self.sparsity = 1.0 - self.nnz / max(weight.numel(), 1)
        self.decisions: dict[int, str] = {}  # batch size -> mode
        self.timings: dict[int, dict[str, float]] = {}  # batch size -> {mode: seconds}
        self.default_mode = "dense"
        self._csr_cache: tuple[Tensor, Tensor] | None = None
        self.train(False)

    # ------------------------------------------------------------ kernel choice
    def mode_for(self, batch_size: int) -> str:
        """The kernel for this batch size: the measured choice, else that of the nearest measured size."""
        if not self.decisions:
            return self.default_mode
        mode = self.decisions.get(batch_size)
        if mode is None:
            log_b = math.log(max(batch_size, 1))
            nearest = min(self.decisions, key=lambda b: (abs(math.log(b) - log_b), -b))
            mode = self.decisions[nearest]
        return mode

    def set_decisions(self, decisions: dict[int, str], default_mode: str = "dense") -> None:
        """Fix the kernel per batch size and free the storage no kernel uses."""
        bad = {m for m in [*decisions.values(), default_mode] if m not in MODES}
        if bad:
            raise ValueError(f"unknown kernel mode(s) {sorted(bad)}: use one of {MODES}")
        self.decisions = dict(decisions)
        self.default_mode = default_mode
        used = set(self.decisions.values()) or {default_mode}
        if "dense" not in used:
            self.weight = None
        if "sparse" not in used:
            self.crow_indices = self.col_indices = self.values = None
            self._csr_cache = None

    def _csr(self) -> Tensor:
        if self.values is None:
            raise RuntimeError("this layer kept no sparse weight: it was set up for dense kernels only")
        cache = self._csr_cache
        if cache is None or cache[0] is not self.values:  # rebuilt after .to() replaced the buffers
            csr = torch.sparse_csr_tensor(
                self.crow_indices, self.col_indices, self.values, self.matrix_shape, check_invariants=False
            )
            cache = self._csr_cache = (self.values, csr)
        return cache[1]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state["_csr_cache"] = None  # sparse CSR tensors cannot be deep-copied or pickled
        return state

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            raise TrainingModeError(
                "a sparsified model is for inference only (BatchNorm is folded away): call .eval(), "
                "and train the original model instead"
            )
        if x.requires_grad and torch.is_grad_enabled():
            raise TrainingModeError(
                "sparse inference computes no gradients: run it under torch.inference_mode() on an input "
                "that does not require grad"
            )
        return self.run(x, self.mode_for(x.shape[0]))

    def run(self, x: Tensor, mode: str) -> Tensor:
        """Apply the layer with the named kernel, whatever the decisions say."""
        if mode == "sparse":
            return self._sparse(x)
        if self.weight is None:
            raise RuntimeError("this layer kept no dense weight: it was set up for sparse kernels only")
        return self._dense(x)

    def _dense(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _sparse(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Shape, sparsity, and the kernel and timings per measured batch size."""
        return {
            "type": type(self).__name__,
            "matrix_shape": list(self.matrix_shape),
            "sparsity": self.sparsity,
            "decisions": {int(b): m for b, m in sorted(self.decisions.items())},
            "default_mode": self.default_mode,
            "timings_s": {int(b): dict(t) for b, t in sorted(self.timings.items())},
        }

    def extra_repr(self) -> str:
        modes = ", ".join(f"b{b}={m}" for b, m in sorted(self.decisions.items())) or f"all={self.default_mode}"
        return f"{self.matrix_shape[0]}x{self.matrix_shape[1]}, sparsity={self.sparsity:.4f}, {modes}"


class SparseConv2d(SparseInferenceLayer):
    """An ``nn.Conv2d`` (groups 1, zero padding) for inference, dense or im2col + CSR."""

    def __init__(self, conv: nn.Conv2d) -> None:
        reason = self.unsupported_reason(conv)
        if reason:
            raise ValueError(f"cannot convert {type(conv).__name__}: {reason}")
        super().__init__(conv.weight, conv.bias)
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.kernel_size = tuple(conv.kernel_size)
        self.stride = tuple(conv.stride)
        self.padding = (0, 0) if conv.padding == "valid" else tuple(conv.padding)
        self.dilation = tuple(conv.dilation)

    @staticmethod
    def unsupported_reason(conv: nn.Module) -> str | None:
        """Why this module cannot become a SparseConv2d, or None when it can."""
        if type(conv) is not nn.Conv2d:
            return f"{type(conv).__name__} is not a plain nn.Conv2d (its forward may differ)"
        if conv.groups != 1:
            return f"grouped convolution (groups={conv.groups})"
        if conv.padding_mode != "zeros":
            return f"padding_mode={conv.padding_mode!r}"
        if isinstance(conv.padding, str) and conv.padding != "valid":
            return f"padding={conv.padding!r}"
        return None

    def _dense(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def _out_hw(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1

    def _im2col(self, x: Tensor, ho: int, wo: int) -> Tensor:
        """Columns (C*kh*kw) x (ho*wo*B), row-major, rows ordered like the flattened weight."""
        b, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        if b == 1 and ho * wo <= _UNFOLD_MAX_PIXELS:
            return F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)[0]
        if ph or pw:
            xp = x.new_zeros((c, h + 2 * ph, w + 2 * pw, b))
            xp[:, ph : ph + h, pw : pw + w].copy_(x.permute(1, 2, 3, 0))
        else:
            xp = x.permute(1, 2, 3, 0)
        s_c, s_h, s_w, s_b = xp.stride()
        view = xp.as_strided(
            (c, kh, kw, ho, wo, b), (s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw, s_b), xp.storage_offset()
        )
        return view.reshape(c * kh * kw, ho * wo * b)  # a view for batch-1 1x1 convs, else one copy

    def _sparse(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"SparseConv2d expects a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
        b = x.shape[0]
        ho, wo = self._out_hw(x.shape[2], x.shape[3])
        cols = self._im2col(x, ho, wo)
        csr = self._csr()
        out = torch.mm(csr, cols) if self.bias is None else torch.addmm(self.bias.unsqueeze(1), csr, cols)
        out = out.view(self.out_channels, ho, wo, b).permute(3, 0, 1, 2)
        return out if b == 1 else out.contiguous()


class SparseLinear(SparseInferenceLayer):
    """An ``nn.Linear`` for inference, dense or CSR weight @ transposed activations."""

    def __init__(self, linear: nn.Linear) -> None:
        reason = self.unsupported_reason(linear)
        if reason:
            raise ValueError(f"cannot convert {type(linear).__name__}: {reason}")
        super().__init__(linear.weight, linear.bias)
        self.in_features = linear.in_features
        self.out_features = linear.out_features

    @staticmethod
    def unsupported_reason(linear: nn.Module) -> str | None:
        """Why this module cannot become a SparseLinear, or None when it can."""
        if type(linear) is not nn.Linear:
            return f"{type(linear).__name__} is not a plain nn.Linear (its forward may differ)"
        return None

    def _dense(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def _sparse(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        xt = x.reshape(-1, self.in_features).t()
        if xt.shape[1] > 1:
            xt = xt.contiguous()  # CSR @ dense is fast for a row-major right operand only
        csr = self._csr()
        out = torch.mm(csr, xt) if self.bias is None else torch.addmm(self.bias.unsqueeze(1), csr, xt)
        return out.t().contiguous().view(*lead, self.out_features)
