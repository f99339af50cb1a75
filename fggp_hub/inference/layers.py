"""Inference-only Conv2d / Linear that run a dense kernel, Winograd, a torch CSR kernel or the native direct one.

Five kernels (``MODES``):

- ``"dense"``: ``F.conv2d`` / ``F.linear`` on the weight with its zeros;
- ``"sparse"``: pure torch, im2col + CSR (the fallback that needs nothing but torch);
- ``"direct"``: the native direct sparse convolution (:mod:`fggp_hub.inference.native`),
  which never builds im2col: activations in CHWN layout (batch innermost), an output
  tile in registers, one load + one FMA per non-zero and output value. Its output is
  a CHWN tensor seen as NCHW (``permute``), so the next direct layer reads it without
  a copy; elementwise ops (ReLU, residual adds) keep that layout. 1x1 stride-1 convs run
  a variant that first copies each 64-pixel tile's input rows of a channel block into a
  contiguous L1-sized buffer (``fggp_sparse_pointwise_f32``); other convs may run the
  packed-tile variant (``"direct@K:G"``, ``fggp_sparse_conv_packed_f32``), which copies a
  group of G tiles' input rows with their halo, zero borders and strided columns gathered,
  into a buffer first. The tuner times each setting.
- ``"winograd"``: 3x3 stride-1 convolutions only, dense weights: Winograd F(4x4, 3x3)
  with native input/output transforms (CHWN in and out) around one ``torch.bmm``. It
  does 4x fewer multiply-adds than a direct dense 3x3 (36 per 4 x 4 output tile, not
  144), so it beats the sparse kernel on layers a pruning run left more than ~15 % dense
  (the first eight convolutions of the zoo's FGGP VGG-19 masks are 13-72 % dense) and
  beat ``F.conv2d`` by 1.7-3.7x at batch 64 on the 2-core benchmark machine.
- ``"gemm"``: 1x1 stride-1 convolutions only, dense weights: a native packed GEMM over the
  channels of a CHWN activation (bias, residual and ReLU fused), for the 1x1 layers
  pruning leaves too dense for the direct kernel; oneDNN's 1x1 convolution on the same
  buffer ran ResNet-50's shapes 1.2-7x slower on the 2-core benchmark machine.

The torch CSR kernel multiplies the CSR weight (C_out x C_in*kh*kw) by im2col
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
from .native import native_library

__all__ = ["MODES", "ChwnGlobalAvgPool2d", "ChwnMaxPool2d", "SparseInferenceLayer", "SparseConv2d", "SparseLinear"]

#: Kernels a layer can run.
MODES = ("dense", "sparse", "direct", "winograd", "gemm")

# F.unfold beats the strided im2col copy at batch 1 on tiny feature maps (measured:
# 512 channels at 2x2 / 4x4), where the strided copy moves runs of only 2-4 floats.
_UNFOLD_MAX_PIXELS = 16


# Non-zeros per output channel and cache block of the direct kernel: the candidates the tuner
# times, and the default. A block costs a load and a store of the output tile per channel, so
# blocks pay only where each channel has a few dozen non-zeros in them (the denser layers).
_BLOCK_NNZ_CANDIDATES = (32, 96)
_BLOCK_NNZ_DEFAULT = 48
#: L1 bytes a cache block's input rows may fill for one output tile (64 floats): the L1d is 32 KiB per core
#: on the AVX2 machines measured, and the output tile, weights and offsets need the rest.
_L1_BLOCK_BYTES = 20 * 1024


def _ci_block_for(density: float, taps: int, n_ci: int, target_nnz: int) -> int:
    """Input channels per cache block so that each output channel has ~target_nnz non-zeros per block (0: one block)."""
    if density <= 0:
        return 0
    block = -(-int(math.ceil(target_nnz / (density * taps))) // 4) * 4
    return block if block < 0.75 * n_ci else 0


#: A direct-kernel setting: ``K`` runs the per-tap kernel with K input channels per cache block (0: one
#: block); ``(K, G)`` runs the packed-tile kernel with K input channels per block and G tiles per packed group.
DirectSetting = int | tuple[int, int]


def parse_direct_setting(text: str) -> DirectSetting:
    """The setting of a ``"direct@..."`` mode: ``"K"`` -> K, ``"K:G"`` -> (K, G)."""
    block, sep, group = text.partition(":")
    if not sep:
        return int(block)
    if int(group) < 1:
        raise ValueError(f"direct@{text}: a packed-tile setting needs at least 1 tile per group (K:G with G >= 1)")
    return int(block), int(group)


def format_direct_setting(setting: DirectSetting) -> str:
    """Inverse of :func:`parse_direct_setting`."""
    return f"{setting[0]}:{setting[1]}" if isinstance(setting, tuple) else str(setting)


#: Packed-tile kernel settings the tuner times, (input channels per block, tiles per group): the best of a
#: grid (blocks 8-128, groups 1-8) on ResNet-50's 3x3 layers at batch 64 (64 and 128 channels, 88 / 97 % sparse).
_PACKED_CANDIDATES = ((32, 4), (32, 8), (64, 8))
#: ... at batch sizes from this one: at batch 1 the per-tap kernel was faster on every such layer (a tile then
#: spans a row of pixels, and the packing moves as much as the multiply-adds).
_PACKED_MIN_BATCH = 8
#: Largest packing buffer (bytes) a candidate may need: half the L2 of the benchmark machine's cores.
_PACKED_MAX_BUFFER_BYTES = 512 * 1024


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _channel_stride(plane: int) -> int:
    """Floats between the channels of a CHWN buffer whose channel plane holds ``plane`` floats.

    A plane of 2^k floats (32 x 32 x 64 = 64 Ki at batch 64) puts the same pixel of every
    channel into the same cache set, and the direct kernel reads dozens of channels per
    tile: they would evict each other from L1 and L2. Large planes are therefore padded
    to an odd number of 64-byte lines, which spreads consecutive channels over the sets.
    """
    if plane < 1024:
        return plane
    cs = -(-plane // 16) * 16
    return cs + 16 if (cs // 16) % 2 == 0 else cs


def _empty_chwn(c: int, h: int, w: int, n: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """An uninitialised (C, H, W, N) tensor whose channel stride is :func:`_channel_stride` (rows dense)."""
    plane = h * w * n
    cs = _channel_stride(plane)
    buf = torch.empty(max((c - 1) * cs + plane, 1), dtype=dtype)
    return buf.as_strided((c, h, w, n), (cs, w * n, n, 1))


def _chwn_channel_stride(x4: Tensor) -> int | None:
    """The channel stride of a (C, H, W, N) view whose (H, W, N) planes are dense (row-major), else None."""
    c, h, w, n = x4.shape
    sc, sh, sw, sn = x4.stride()
    if (n > 1 and sn != 1) or (w > 1 and sw != n) or (h > 1 and sh != w * n):
        return None
    plane = h * w * n
    if c == 1:
        return plane
    return sc if sc >= plane else None


def _nchw_planes(x: Tensor) -> bool:
    """Whether ``x`` (N, C, H, W) is float32 on the CPU with dense (H, W) planes: what the native transposes read."""
    if x.dim() != 4 or x.dtype != torch.float32 or x.device.type != "cpu":
        return False
    _, _, h, w = x.shape
    return (w == 1 or x.stride(3) == 1) and (h == 1 or x.stride(2) == w)


def _as_chwn(x: Tensor) -> tuple[Tensor, int]:
    """``x`` (N, C, H, W) as a (C, H, W, N) view with dense planes and its channel stride: a view when ``x``
    came from a direct layer, else one copy (into a padded buffer; the native 8 x 8-block transpose where it
    can, which is 3-5x faster than torch's strided copy of the permuted view)."""
    x4 = x.permute(1, 2, 3, 0)
    cs = _chwn_channel_stride(x4)
    if cs is None:
        y = _empty_chwn(*x4.shape, dtype=x.dtype)
        ycs = y.stride(0) if y.shape[0] > 1 else y[0].numel()
        lib = native_library() if x.shape[0] > 1 and _nchw_planes(x) else None
        if lib is None:
            y.copy_(x4)
        else:
            n, c, h, w = x.shape
            lib.fggp_nchw_to_chwn_f32(x.data_ptr(), n, c, h * w, x.stride(0), x.stride(1), y.data_ptr(), ycs,
                                      torch.get_num_threads())
        return y, ycs
    return x4, cs


def _as_nchw(x: Tensor) -> Tensor:
    """A CHWN-layout ``x`` (a direct layer's output, seen as NCHW) copied to a contiguous NCHW tensor with the
    native transpose; any other ``x`` unchanged (F.conv2d would make the same copy, with torch's slower one)."""
    if x.dim() != 4 or x.shape[0] <= 1 or x.is_contiguous() or x.dtype != torch.float32 or x.device.type != "cpu":
        return x
    cs = _chwn_channel_stride(x.permute(1, 2, 3, 0))
    lib = native_library() if cs is not None else None
    if lib is None:
        return x
    n, c, h, w = x.shape
    y = torch.empty((n, c, h, w), dtype=x.dtype)
    lib.fggp_chwn_to_nchw_f32(x.data_ptr(), n, c, h * w, cs, y.data_ptr(), c * h * w, h * w, torch.get_num_threads())
    return y


def _is_chwn(x: Tensor) -> bool:
    return x.dim() == 4 and _chwn_channel_stride(x.permute(1, 2, 3, 0)) is not None


def _float32_bias(layer: "SparseInferenceLayer") -> Tensor | None:
    """The layer's bias as the native kernels read it: float32, contiguous (None: no bias)."""
    bias = layer.bias
    if bias is not None and (bias.dtype != torch.float32 or not bias.is_contiguous()):
        bias = bias.float().contiguous()
    return bias


def _direct_conv_chwn(
    layer: "SparseInferenceLayer",
    x4: Tensor,
    xcs: int,
    meta: tuple,
    out_shape: tuple[int, int, int, int],
    res: Tensor | None = None,
    kernel_hw: tuple[int, int, int, int] | None = None,
) -> Tensor:
    """Run the native kernel on ``x4`` (C', H', W', N) with channel stride ``xcs``: returns (Co, Ho, Wo, N)
    (padded channel stride), bias, residual ``res`` (N, Co, Ho, Wo) and ReLU fused.

    ``kernel_hw``: (H', W', Ho, Wo) as the kernel sees them, when it differs from the shapes (1x1 layers
    run with each channel plane as one row).
    """
    lib = native_library()
    co, ho, wo, n = out_shape
    seg, dh, dw, ci, vals, nb = meta
    out = _empty_chwn(co, ho, wo, n)
    kh, kw, kho, kwo = kernel_hw or (x4.shape[1], x4.shape[2], ho, wo)
    bias = _float32_bias(layer)
    r4, rcs = (None, 0) if res is None else _as_chwn(res.expand(n, co, ho, wo))
    xoff = _input_offsets(layer, meta, xcs, kw, n)
    lib.fggp_sparse_conv_chwn_f32(
        x4.data_ptr(), kh, kw, n, kho, kwo, co, dh.numel(), nb,
        seg.data_ptr(), dh.data_ptr(), dw.data_ptr(), ci.data_ptr(), vals.data_ptr(),
        _ptr(bias), _ptr(r4), out.data_ptr(), int(layer.relu) | (2 if out.numel() * 4 >= _STREAM_MIN_BYTES else 0),
        xcs, out.stride(0) if co > 1 else ho * wo * n, rcs,
        _ptr(xoff), torch.get_num_threads(),
    )
    return out


# Winograd F(4x4, 3x3): G of Lavin & Gray (2016), interpolation points 0, +-1, +-2 (B^T and A^T are in the
# native transforms). The weight transform U = G g G^T is made in float64 once per layer.
_WINOGRAD_G = (
    (1 / 4, 0.0, 0.0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0.0, 0.0, 1.0),
)
#: Tile-row chunks of a Winograd layer hold the transformed input and products of at most this many tiles
#: ... and bytes: torch.bmm (MKL) ran the 36 products at 45-60 GMAC/s up to ~36 MiB per chunk and at
#: 15-30 beyond on the 2-core AMD benchmark machine (64 -> 64 channels at 32 x 32, batch 64: 4096 tiles
#: in one chunk 44 ms, in chunks of 2048 21 ms).
_WINOGRAD_MAX_TILES = 2048
_WINOGRAD_CHUNK_BYTES = 40 * 2**20


def _winograd_conv_chwn(layer: "SparseConv2d", x: Tensor, residual: Tensor | None) -> Tensor:
    """Winograd F(4x4, 3x3) of a 3x3 stride-1 conv on ``x`` (N, C, H, W; CHWN or not): (N, Co, Ho, Wo) seen
    from a CHWN buffer, bias, ``residual`` and ReLU fused into the output transform."""
    lib = native_library()
    n, c, h, w = x.shape
    co = layer.out_channels
    (pad_h, pad_w) = layer.padding
    ho, wo = layer._out_hw(h, w)
    th_n, tw_n = -(-ho // 4), -(-wo // 4)
    x4, xcs = _as_chwn(x)
    u = layer._winograd_weight()
    per_row = tw_n * n
    max_tiles = min(_WINOGRAD_MAX_TILES, _WINOGRAD_CHUNK_BYTES // (36 * 4 * (c + co)))
    rows = max(1, min(th_n, max_tiles // per_row))
    v_buf = torch.empty(36 * c * rows * per_row)
    m_buf = torch.empty(36 * co * rows * per_row)
    out = _empty_chwn(co, ho, wo, n)
    ocs = out.stride(0) if co > 1 else ho * wo * n
    bias = _float32_bias(layer)
    r4, rcs = (None, 0) if residual is None else _as_chwn(residual.expand(n, co, ho, wo))
    threads = torch.get_num_threads()
    for th0 in range(0, th_n, rows):
        th1 = min(th_n, th0 + rows)
        p = (th1 - th0) * per_row
        v = v_buf[: 36 * c * p].view(36, c, p)
        m = m_buf[: 36 * co * p].view(36, co, p)
        lib.fggp_winograd_input_f32(x4.data_ptr(), c, h, w, n, xcs, pad_h, pad_w, tw_n, th0, th1, v.data_ptr(),
                                    threads)
        torch.bmm(u, v, out=m)
        lib.fggp_winograd_output_f32(m.data_ptr(), co, ho, wo, n, tw_n, th0, th1, _ptr(bias), _ptr(r4), rcs,
                                     out.data_ptr(), ocs, int(layer.relu), threads)
    return out


#: Input-channel blocks the tuner times for the sparse 1x1 kernel (besides one block), and its default: a
#: block's packed rows (block x 64 floats) fill 16-64 KiB, the L1d (32 KiB) to L2 of the benchmark machine.
_POINTWISE_BLOCKS = (64, 128, 256)
_POINTWISE_DEFAULT_BLOCK = 128


def _sparse_pointwise_chwn(
    layer: "SparseConv2d", x4: Tensor, xcs: int, meta: tuple, block: int, residual: Tensor | None
) -> Tensor:
    """The native sparse 1x1 kernel (packed input tiles) on ``x4`` (C, H, W, N): (Co, H, W, N) CHWN, bias,
    ``residual`` and ReLU fused. ``meta``: the direct kernel's weight form for ``block`` (one tap)."""
    seg, _, _, ci, vals, nb = meta
    c, h, w, n = x4.shape
    key = ("pointwise block", block)
    kb = layer._direct_meta.get(key)
    if kb is None:  # the channels per block _tap_grouped used: it counts up to the last channel in use
        n_ci = int(ci.max()) + 1 if ci.numel() else 1
        kb = layer._direct_meta[key] = n_ci if block <= 0 else min(block, n_ci)
    co = layer.out_channels
    out = _empty_chwn(co, h, w, n)
    r4, rcs = (None, 0) if residual is None else _as_chwn(residual.expand(n, co, h, w))
    native_library().fggp_sparse_pointwise_f32(
        seg.data_ptr(), nb, kb, ci.data_ptr(), vals.data_ptr(), co, c, x4.data_ptr(), xcs, h * w * n,
        _ptr(_float32_bias(layer)), _ptr(r4), rcs, out.data_ptr(), out.stride(0) if co > 1 else h * w * n,
        int(layer.relu) | (2 if out.numel() * 4 >= _STREAM_MIN_BYTES else 0), torch.get_num_threads(),
    )
    return out


#: Output channels per weight panel of the native GEMM (its micro-kernel computes 6 channels x 16 pixels).
_GEMM_PANEL_ROWS = 6


def _pointwise_gemm_chwn(layer: "SparseConv2d", x: Tensor, residual: Tensor | None) -> Tensor:
    """A 1x1 stride-1 conv on ``x`` (N, C, H, W; CHWN or not) with the native packed GEMM: (Co, H, W, N) CHWN,
    bias, ``residual`` and ReLU fused."""
    n, c, h, w = x.shape
    co = layer.out_channels
    x4, xcs = _as_chwn(x)
    out = _empty_chwn(co, h, w, n)
    ocs = out.stride(0) if co > 1 else h * w * n
    r4, rcs = (None, 0) if residual is None else _as_chwn(residual.expand(n, co, h, w))
    native_library().fggp_dense_pointwise_f32(
        layer._gemm_weight().data_ptr(), co, c, x4.data_ptr(), xcs, h * w * n, _ptr(_float32_bias(layer)), _ptr(r4),
        rcs, out.data_ptr(), ocs, int(layer.relu) | (2 if out.numel() * 4 >= _STREAM_MIN_BYTES else 0),
        torch.get_num_threads(),
    )
    return out


def _packed_row_floats(group: int, shift_span: int, batch: int) -> int:
    """Floats per buffer row of the packed-tile kernel: ``group`` tiles of 64 plus the column shifts' halo, rounded
    up to 8 (the native kernel computes the same)."""
    return (group * 64 + shift_span * batch + 7) // 8 * 8


#: Outputs at least this large are written with non-temporal stores (they do not stay in L2/L3 anyway).
_STREAM_MIN_BYTES = 24 * 2**20


#: Input geometries whose per-non-zero offsets a layer keeps (batch sizes in use, usually one or two).
_MAX_OFFSET_TABLES = 4


def _input_offsets(layer: "SparseInferenceLayer", meta: tuple, xcs: int, w: int, n: int) -> Tensor | None:
    """Each non-zero's input offset ``ci * xcs + dh * w * n + dw * n`` (int32, kernel order) for this geometry,
    cached on the layer; None when an offset would not fit in int32 (the kernel then takes the per-tap loop)."""
    seg, dh, dw, ci, _, _ = meta
    key = (id(seg), xcs, w, n)
    cache = layer._offset_tables
    if key in cache and cache[key][0] is seg:  # the entry holds seg, so its id cannot be reused meanwhile
        return cache[key][1]
    n_taps = dh.numel()
    if ci.numel() and (int(ci.max()) + 1) * xcs + (int(dh.abs().max()) * w + int(dw.abs().max())) * n >= 2**31:
        table = None
    else:
        counts = (seg[1:] - seg[:-1]).long()
        tap = torch.repeat_interleave(torch.arange(counts.numel()) % n_taps, counts)
        table = (ci.long() * xcs + dh.long()[tap] * (w * n) + dw.long()[tap] * n).to(torch.int32)
    if len(cache) >= _MAX_OFFSET_TABLES:
        cache.pop(next(iter(cache)))
    cache[key] = (seg, table)
    return table


def _tap_grouped(
    rows: Tensor, taps: Tensor, ci: Tensor, values: Tensor, n_rows: int, tap_shifts: Tensor, block: int = 0
) -> tuple[Tensor, ...]:
    """The direct kernel's weight form: non-zeros sorted by (input-channel block, output channel, tap, input channel).

    ``block`` input channels per block (0: one block). The kernel sweeps all output
    channels over one block of input channels before the next block, so the input a
    tile reads stays in L1 (partial sums go through the output tile, in cache).

    Returns (segment pointers (blocks * rows * T + 1), tap row shifts, tap column shifts,
    input channels, values, number of blocks).
    """
    n_taps = tap_shifts.shape[0]
    n_ci = int(ci.max()) + 1 if ci.numel() else 1
    block = n_ci if block <= 0 else min(block, n_ci)
    n_blocks = -(-n_ci // block)
    slot = (torch.div(ci, block, rounding_mode="floor") * n_rows + rows) * n_taps + taps
    order = torch.argsort(slot * n_ci + ci, stable=True)
    counts = torch.bincount(slot, minlength=n_blocks * n_rows * n_taps)
    seg = torch.zeros(n_blocks * n_rows * n_taps + 1, dtype=torch.int64)
    seg[1:] = torch.cumsum(counts, 0)
    return (
        seg.to(torch.int32),
        tap_shifts[:, 0].to(torch.int32).contiguous(),
        tap_shifts[:, 1].to(torch.int32).contiguous(),
        ci[order].to(torch.int32),
        values[order].to(torch.float32).contiguous(),
        n_blocks,
    )


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
        self.direct_blocks: dict[int, DirectSetting] = {}  # batch size -> the direct kernel's setting
        self.timings: dict[int, dict[str, float]] = {}  # batch size -> {mode: seconds}
        self.default_mode = "dense"
        self._csr_cache: tuple[Tensor, Tensor] | None = None
        self._direct_meta: dict[tuple, tuple] = {}  # input geometry -> per-non-zero offsets of the direct kernel
        # (weight form id, channel stride, W, N) -> (weight form's seg, input offsets of the direct kernel)
        self._offset_tables: dict[tuple, tuple[Tensor, Tensor | None]] = {}
        self.relu = False  # a following ReLU fused into the kernels (set by sparsify_for_inference)
        # forward(x, residual) adds a residual before the ReLU (a ResNet block's add, fused by fuse_residual_blocks)
        self.residual_fused = False
        self.paths: dict[int, str] = {}  # batch size -> the kernel path the last run took (inference_report)
        self.tuner = None  # set while sparsify_for_inference times the kernels: (layer, x) -> mode
        self._winograd_cache: tuple[Tensor, Tensor] | None = None  # (weight, its Winograd transform)
        self._gemm_cache: tuple[Tensor, Tensor] | None = None  # (weight, its packed form for the "gemm" kernel)
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
        if "winograd" not in used:
            self._winograd_cache = None
        if "gemm" not in used:
            self._gemm_cache = None
        if not used & {"dense", "winograd", "gemm"}:  # winograd and gemm fall back to dense on inputs they cannot take
            self.weight = None
        if not used & {"sparse", "direct"}:
            self.crow_indices = self.col_indices = self.values = None
            self._csr_cache = None
            self._direct_meta = {}
            self._offset_tables = {}

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
        state["_winograd_cache"] = None  # rebuilt from the weight on first use
        state["_gemm_cache"] = None
        return state

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
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
        mode = self.tuner(self, x, residual) if self.tuner is not None else self.mode_for(x.shape[0])
        return self.run(x, mode, residual)

    def run(self, x: Tensor, mode: str, residual: Tensor | None = None) -> Tensor:
        """Apply the layer (its residual add and fused ReLU) with the named kernel, whatever the decisions say.

        ``"direct"`` runs the torch CSR kernel instead where the native one cannot
        (no library, not float32): see :meth:`direct_supported`; ``"winograd"`` and ``"gemm"`` run
        the dense kernel where they cannot (not a 3x3 / 1x1 stride-1 conv, no library, not float32).
        """
        self._check_input(x)  # the native kernels trust the shapes: a wrong channel count would read past buffers
        if mode == "gemm":
            if self.gemm_supported(x) and (residual is None or self._kernel_adds_residual(residual)):
                self.paths[x.shape[0]] = "dense 1x1 GEMM, packed weights (native, CHWN)"
                return _pointwise_gemm_chwn(self, x, residual).permute(3, 0, 1, 2)  # residual, ReLU applied
            mode = "dense"
        if mode == "winograd":
            if self.winograd_supported(x) and (residual is None or self._kernel_adds_residual(residual)):
                self.paths[x.shape[0]] = "winograd F(4x4,3x3) (dense weights, CHWN)"
                return _winograd_conv_chwn(self, x, residual).permute(3, 0, 1, 2)  # residual, ReLU applied
            mode = "dense"
        if mode.startswith("direct"):  # "direct", or "direct@K" / "direct@K:G": one setting (tuning)
            if self.direct_supported(x) and (residual is None or self._kernel_adds_residual(residual)):
                block = parse_direct_setting(mode[7:]) if mode.startswith("direct@") else None
                # applies the residual and the ReLU itself
                return self._direct(x, residual=residual) if block is None else self._direct(x, block, residual)
            mode = "sparse"
        if mode == "sparse":
            out = self._sparse(x)
            self.paths[x.shape[0]] = "torch CSR (im2col + CSR GEMM)"
        elif self.weight is None:
            raise RuntimeError("this layer kept no dense weight: it was set up for sparse kernels only")
        else:
            out = self._dense(x)
        if residual is not None:
            out = out.add_(residual) if out.shape == residual.shape else out + residual
        return F.relu(out, inplace=True) if self.relu else out

    def _check_input(self, x: Tensor) -> None:
        """Raise a one-line ValueError when ``x`` does not have the layer's input shape."""

    def direct_supported(self, x: Tensor | None = None) -> bool:
        """Whether the native direct kernel can run this layer (on ``x``): library built, float32, CPU."""
        if self.values is None or self.values.dtype != torch.float32 or self.values.device.type != "cpu":
            return False
        if x is not None and (x.dtype != torch.float32 or x.device.type != "cpu"):
            return False
        return native_library() is not None

    def winograd_supported(self, x: Tensor | None = None) -> bool:
        """Whether the Winograd kernel can run this layer (on ``x``): 3x3 stride-1 convs, float32, CPU, library."""
        return False

    def gemm_supported(self, x: Tensor | None = None) -> bool:
        """Whether the native dense GEMM can run this layer (on ``x``): 1x1 stride-1 convs, float32, CPU, library."""
        return False

    def _direct(self, x: Tensor, block: DirectSetting | None = None, residual: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def _kernel_adds_residual(self, residual: Tensor) -> bool:
        """Whether the native kernel can add this residual (else the torch CSR kernel runs, adding it after)."""
        return False

    def block_candidates(self, *targets: int, batch: int | None = None) -> list[DirectSetting]:
        """Settings of the direct kernel worth timing (convs only; 0 = no blocking)."""
        return [0]

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
            "direct_ci_blocks": {int(b): k for b, k in sorted(self.direct_blocks.items())},
            "relu_fused": self.relu,
            "residual_fused": self.residual_fused,
            "paths": {int(b): p for b, p in sorted(self.paths.items())},
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
        self.direct_ci_block: DirectSetting | None = None  # the direct kernel's setting (None: auto, 0: one block)

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

    def _kernel_adds_residual(self, residual: Tensor) -> bool:
        return residual.dtype == torch.float32 and residual.device.type == "cpu" and residual.dim() == 4

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SparseConv2d expects a 4-D (N, {self.in_channels}, H, W) input, got shape {tuple(x.shape)}: "
                "pass the activation the original conv took"
            )
        ho, wo = self._out_hw(x.shape[2], x.shape[3])
        if ho <= 0 or wo <= 0:
            raise ValueError(
                f"SparseConv2d input of {x.shape[2]}x{x.shape[3]} pixels is too small for kernel {self.kernel_size}, "
                f"stride {self.stride}, padding {self.padding}, dilation {self.dilation} (output {ho}x{wo}): "
                "pass a larger image"
            )

    def winograd_supported(self, x: Tensor | None = None) -> bool:
        if self.kernel_size != (3, 3) or self.stride != (1, 1) or self.dilation != (1, 1):
            return False
        if self.weight is None or self.weight.dtype != torch.float32 or self.weight.device.type != "cpu":
            return False
        if x is not None:
            if x.dim() != 4 or x.dtype != torch.float32 or x.device.type != "cpu" or x.shape[0] == 0:
                return False
            if min(self._out_hw(x.shape[2], x.shape[3])) <= 0:  # too small: dense raises F.conv2d's error
                return False
        return native_library() is not None

    def gemm_supported(self, x: Tensor | None = None) -> bool:
        if not self.is_pointwise:
            return False
        if self.weight is None or self.weight.dtype != torch.float32 or self.weight.device.type != "cpu":
            return False
        if x is not None and (x.dim() != 4 or x.dtype != torch.float32 or x.device.type != "cpu" or x.shape[0] == 0):
            return False
        return native_library() is not None

    def _gemm_weight(self) -> Tensor:
        """The weight packed for the native GEMM: (ceil(Co/6), Ci, 6) panels of 6 output channels, zero rows past Co."""
        cache = self._gemm_cache
        if cache is None or cache[0] is not self.weight:
            co, ci = self.out_channels, self.in_channels
            panels = -(-co // _GEMM_PANEL_ROWS)
            packed = self.weight.new_zeros(panels * _GEMM_PANEL_ROWS, ci)
            packed[:co] = self.weight.reshape(co, ci)
            packed = packed.view(panels, _GEMM_PANEL_ROWS, ci).transpose(1, 2).contiguous()
            cache = self._gemm_cache = (self.weight, packed)
        return cache[1]

    def _winograd_weight(self) -> Tensor:
        """U = G g G^T (36, Co, Ci), float32, made in float64 from the (BN-folded) weight once."""
        cache = self._winograd_cache
        if cache is None or cache[0] is not self.weight:
            g = torch.tensor(_WINOGRAD_G, dtype=torch.float64)
            u = (g @ self.weight.double() @ g.T).permute(2, 3, 0, 1)  # (6, 6, Co, Ci); einsum took seconds
            cache = self._winograd_cache = (self.weight, u.reshape(36, *self.weight.shape[:2]).float().contiguous())
        return cache[1]

    @property
    def _packed_pointwise(self) -> bool:
        """A 1x1 unpadded conv, any stride: the direct path runs the packed-tile 1x1 kernel (after the
        polyphase split when strided)."""
        return self.kernel_size == (1, 1) and self.padding == (0, 0)

    @property
    def is_pointwise(self) -> bool:
        """A 1x1, stride-1, unpadded convolution: a plain GEMM over channels."""
        return self.kernel_size == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)

    def _dense(self, x: Tensor) -> Tensor:
        if self.is_pointwise and x.dim() == 4 and x.shape[0] > 1 and _is_chwn(x) and x.dtype == self.weight.dtype:
            # CHWN input (a direct layer's output): one GEMM (Co x Ci) @ (Ci x H*W*N), output in CHWN again,
            # where F.conv2d would convert the layout in and the next direct layer back out.
            n, c, h, w = x.shape
            self.paths[n] = "dense 1x1 GEMM in CHWN"
            x4, cs = _as_chwn(x)
            # F.conv2d on the CHWN buffer seen as one 1 x (H*W*N) image: oneDNN's 1x1 convolution ran these
            # products 1.1-1.7x faster than torch.addmm (MKL's sgemm) on the 2-core AMD benchmark machine
            x2 = x4.as_strided((1, c, 1, h * w * n), (c * cs, cs, h * w * n, 1))
            out = F.conv2d(x2, self.weight, self.bias)
            return out.view(self.out_channels, h, w, n).permute(3, 0, 1, 2)
        self.paths[x.shape[0]] = "dense (F.conv2d)"
        return F.conv2d(_as_nchw(x), self.weight, self.bias, self.stride, self.padding, self.dilation)

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

    def _direct_meta_for(self, block: int = 0) -> tuple[tuple, tuple[int, ...]]:
        """The direct kernel's weight form after the polyphase rewrite, and the input phases it reads.

        A stride-s convolution reads input row ``oh*s + off``: split the input into its
        s x s phase images (row ``q*s + p`` goes to phase p, row q) and every tap becomes
        a stride-1 tap of one phase image, shifted by ``floor(off / s)``. Only phases that
        some non-zero reads are built; phase p of input channel ci is channel ``ci*P + p``.
        """
        cached = self._direct_meta.get(("conv", block))
        if cached is not None:
            return cached
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        rows = torch.repeat_interleave(
            torch.arange(self.out_channels), (self.crow_indices[1:] - self.crow_indices[:-1]).long()
        )
        cols = self.col_indices.long()
        ci, rem = cols // (kh * kw), cols % (kh * kw)
        off_h, off_w = (rem // kw) * dh - ph, (rem % kw) * dw - pw
        phase = torch.remainder(off_h, sh) * sw + torch.remainder(off_w, sw)
        shift_h, shift_w = torch.div(off_h, sh, rounding_mode="floor"), torch.div(off_w, sw, rounding_mode="floor")
        phases = (tuple(int(p) for p in torch.unique(phase)) if (sh, sw) != (1, 1) else ()) or (0,)
        lookup = torch.zeros(sh * sw, dtype=torch.long)
        lookup[list(phases)] = torch.arange(len(phases))
        shifts, taps = torch.unique(torch.stack([shift_h, shift_w], 1), dim=0, return_inverse=True)
        if shifts.numel() == 0:
            shifts = torch.zeros((1, 2), dtype=torch.long)
        meta = _tap_grouped(rows, taps, ci * len(phases) + lookup[phase], self.values, self.out_channels, shifts, block)
        self._direct_meta[("conv", block)] = cached = (meta, phases)
        return cached

    def block_candidates(self, *targets: int, batch: int | None = None) -> list[DirectSetting]:
        """Settings of the direct kernel worth timing (0 = the per-tap kernel with one block; always first).

        ``targets``: non-zeros per output channel and block (default :data:`_BLOCK_NNZ_CANDIDATES`).
        With ``batch``, also the block whose input rows for one output tile fill about
        :data:`_L1_BLOCK_BYTES` of L1 (the kernel's flat loop makes small blocks pay on large maps),
        and the packed-tile kernel's settings (:data:`_PACKED_CANDIDATES`) for all but stride-1 1x1 layers.
        """
        if self.values is None:
            return [0]
        _, phases = self._direct_meta_for(0)
        n_ci = self.in_channels * len(phases)
        packed = self._packed_candidates(batch) if batch is not None and not targets else []
        if self._packed_pointwise:  # the packed-tile 1x1 kernel: blocks sized for L1, whatever the density
            return [0, *(k for k in _POINTWISE_BLOCKS if k < 0.75 * n_ci), *packed]
        density = 1.0 - self.sparsity
        taps = self.kernel_size[0] * self.kernel_size[1]
        blocks: list[DirectSetting] = [0]
        for target in targets or _BLOCK_NNZ_CANDIDATES:
            k = _ci_block_for(density, taps, n_ci, target)
            if k not in blocks:
                blocks.append(k)
        if batch is not None and not targets:
            rows = 1 if self.is_pointwise else self.kernel_size[0]
            width = 64 if self.is_pointwise else 64 + (self.kernel_size[1] - 1) * self.dilation[1] * batch
            k = max(4, _L1_BLOCK_BYTES // (4 * rows * width) // 4 * 4)
            if k < 0.75 * n_ci and k not in blocks:
                blocks.append(k)
        return blocks + packed

    def _packed_candidates(self, batch: int) -> list[tuple[int, int]]:
        """The packed-tile kernel's settings worth timing at this batch size: none for 1x1 layers, whose own packed
        kernel (after the polyphase split when strided) was 1.5x faster on ResNet-50's strided 1x1 layers."""
        if self._packed_pointwise or batch < _PACKED_MIN_BATCH:
            return []
        out: list[tuple[int, int]] = []
        for block, group in _PACKED_CANDIDATES:
            block = 0 if block >= 0.75 * self.in_channels else block
            if (block, group) not in out and self._packed_buffer_bytes(block, group, batch) <= _PACKED_MAX_BUFFER_BYTES:
                out.append((block, group))
        return out  # none at very large batches: the per-tap kernel needs no buffer

    def _packed_geometry(self) -> tuple[int, int, int, int]:
        """(kernel rows R, column phases F, smallest and largest column shift q) of the packed-tile kernel: kernel
        column j reads phase-image column ``ow + q`` of phase f, where ``j * dilation - padding = q * stride + f``."""
        (kh, kw), (_, sw), (_, pw), (_, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        shifts = [(j * dw - pw) // sw for j in range(kw)]
        return kh, sw, min(shifts), max(shifts)

    def _packed_buffer_bytes(self, block: int, group: int, batch: int) -> int:
        rows, phases, qmin, qmax = self._packed_geometry()
        k = self.in_channels if block <= 0 else min(block, self.in_channels)
        return 4 * k * rows * phases * _packed_row_floats(group, qmax - qmin, batch)

    def _packed_meta_for(self, block: int, group: int, batch: int) -> tuple[Tensor, ...]:
        """The packed-tile kernel's weight form: (seg (NB * Co + 1), buffer offsets, values, prow (NB + 1), prows
        (rows, 4), channels per block KB, blocks NB), non-zeros sorted by (block, output channel, offset). The offsets
        depend on the buffer row length, so on ``group`` and ``batch``: cached per (block, group, batch)."""
        key = ("packed", block, group, batch)
        cached = self._direct_meta.get(key)
        if cached is not None:
            return cached
        (kh, kw), (_, sw), (_, pw), (_, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        rows_r, phases, qmin, qmax = self._packed_geometry()
        n_ci, co = self.in_channels, self.out_channels
        kb = n_ci if block <= 0 else min(block, n_ci)
        nb = -(-n_ci // kb)
        length = _packed_row_floats(group, qmax - qmin, batch)
        if kb * rows_r * phases * length >= 2**31:  # the kernel's int32 offsets into its buffer
            raise ValueError(
                f"packed-tile setting {block}:{group} at batch {batch} needs a buffer of {kb * rows_r * phases * length} "
                "floats (over 2**31): use fewer input channels per block or tiles per group"
            )
        out_ch = torch.repeat_interleave(torch.arange(co), (self.crow_indices[1:] - self.crow_indices[:-1]).long())
        cols = self.col_indices.long()
        ci, rem = cols // (kh * kw), cols % (kh * kw)
        i, cw = rem // kw, (rem % kw) * dw - pw
        f, q = torch.remainder(cw, sw), torch.div(cw, sw, rounding_mode="floor")
        blk = ci // kb
        row = ((ci % kb) * rows_r + i) * phases + f
        off = row * length + (q - qmin) * batch
        slot = blk * co + out_ch
        order = torch.argsort(slot * (int(off.max()) + 1 if off.numel() else 1) + off, stable=True)
        seg = torch.zeros(nb * co + 1, dtype=torch.int64)
        seg[1:] = torch.cumsum(torch.bincount(slot, minlength=nb * co), 0)
        per_block = kb * rows_r * phases
        used = torch.unique(blk * per_block + row)  # sorted: block by block, rows ascending
        prow = torch.zeros(nb + 1, dtype=torch.int64)
        prow[1:] = torch.cumsum(torch.bincount(used // per_block, minlength=nb), 0)
        local = used % per_block  # the kernel's row table: (buffer row, channel in the block, kernel row, phase)
        prows = torch.stack([local, local // (rows_r * phases), (local // phases) % rows_r, local % phases], 1)
        cached = (seg.to(torch.int32), off[order].to(torch.int32), self.values[order].to(torch.float32).contiguous(),
                  prow.to(torch.int32), prows.to(torch.int32).contiguous(), kb, nb)
        self._direct_meta[key] = cached
        return cached

    def _packed_direct(self, x: Tensor, block: int, group: int, residual: Tensor | None) -> Tensor:
        """The packed-tile kernel on ``x`` (N, C, H, W; CHWN or not): (N, Co, Ho, Wo) seen from a CHWN buffer,
        bias, ``residual`` and ReLU fused; strided convs gather their phases while packing."""
        if group < 1:
            raise ValueError(f"packed-tile setting {block}:{group}: at least 1 tile per group")
        b, c, h, w = x.shape
        ho, wo = self._out_hw(h, w)
        co = self.out_channels
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        self.paths[b] = f"direct {kh}x{kw} packed tiles" + (
            f" stride {sh}x{sw} (phases gathered while packing, CHWN)" if (sh, sw) != (1, 1) else " (CHWN)")
        x4, xcs = _as_chwn(x)
        out = _empty_chwn(co, ho, wo, b)  # ho, wo >= 1: _check_input refused smaller inputs
        seg, off, vals, prow, prows, kb, nb = self._packed_meta_for(block, group, b)
        rows_r, phases, qmin, qmax = self._packed_geometry()
        r4, rcs = (None, 0) if residual is None else _as_chwn(residual.expand(b, co, ho, wo))
        status = native_library().fggp_sparse_conv_packed_f32(
            x4.data_ptr(), c, h, w, b, xcs, co, ho, wo, sh, sw, self.padding[0], self.dilation[0], rows_r, phases,
            qmin, qmax, group, nb, kb, seg.data_ptr(), off.data_ptr(), vals.data_ptr(), prow.data_ptr(),
            prows.data_ptr(), _ptr(_float32_bias(self)), _ptr(r4), rcs, out.data_ptr(),
            out.stride(0) if co > 1 else ho * wo * b,
            int(self.relu) | (2 if out.numel() * 4 >= _STREAM_MIN_BYTES else 0), torch.get_num_threads(),
        )
        if status != 0:
            size = self._packed_buffer_bytes(block, group, b)
            raise MemoryError(f"the packed-tile kernel could not allocate its {size}-byte buffer per thread for setting "
                              f"{block}:{group}: use a smaller block or group")
        return out.permute(3, 0, 1, 2)

    def _phase_offsets(self, phases: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """Row and column offsets (int32) of each phase image the polyphase split builds."""
        key = ("phases", phases)
        if key not in self._direct_meta:
            sw = self.stride[1]
            self._direct_meta[key] = (torch.tensor([p // sw for p in phases], dtype=torch.int32),
                                      torch.tensor([p % sw for p in phases], dtype=torch.int32))
        return self._direct_meta[key]

    def _direct(self, x: Tensor, block: DirectSetting | None = None, residual: Tensor | None = None) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"SparseConv2d expects a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
        b, c, h, w = x.shape
        ho, wo = self._out_hw(h, w)
        hp, wp = -(-h // self.stride[0]), -(-w // self.stride[1])
        if block is None:
            block = self.direct_ci_block
        if block is None:
            block = self.direct_blocks.get(b)
        if block is None:
            if self._packed_pointwise:
                block = _POINTWISE_DEFAULT_BLOCK if _POINTWISE_DEFAULT_BLOCK in self.block_candidates() else 0
            else:
                block = self.block_candidates(_BLOCK_NNZ_DEFAULT)[-1]
        if isinstance(block, tuple):
            return self._packed_direct(x, *block, residual)
        meta, phases = self._direct_meta_for(block)
        if self.is_pointwise:
            # 1x1: a sparse x dense GEMM over channels, the (H*W*N) plane one row of 64-pixel tiles
            self.paths[b] = "direct 1x1 (sparse GEMM over channels, packed tiles, CHWN)"
            x4, cs = _as_chwn(x)
            return _sparse_pointwise_chwn(self, x4, cs, meta, block, residual).permute(3, 0, 1, 2)
        (sh, sw) = self.stride
        self.paths[b] = f"direct {self.kernel_size[0]}x{self.kernel_size[1]}" + (
            " (CHWN)" if (sh, sw) == (1, 1)
            else f" stride {sh}x{sw} (polyphase split, {'packed tiles, ' if self._packed_pointwise else ''}CHWN)"
        )
        if (sh, sw) == (1, 1):
            xc, cs = _as_chwn(x)  # CHWN: a view when x came from a direct layer, else one copy
        elif b > 1:
            # phase images, channel ci*P + p, in a padded CHWN buffer: the native split (one memcpy per pixel;
            # the library exists, or the direct kernel would not run)
            lib = native_library()
            x4, xcs = _as_chwn(x)
            xc = _empty_chwn(c * len(phases), hp, wp, b)
            cs = xc.stride(0) if xc.shape[0] > 1 else hp * wp * b
            ph, pw = self._phase_offsets(phases)
            lib.fggp_polyphase_chwn_f32(x4.data_ptr(), c, h, w, b, xcs, sh, sw, ph.data_ptr(), pw.data_ptr(),
                                        len(phases), hp, wp, xc.data_ptr(), cs, torch.get_num_threads())
        else:
            x4 = x.permute(1, 2, 3, 0)
            if hp * sh == h and wp * sw == w:
                xs = x4.unflatten(1, (hp, sh)).unflatten(3, (wp, sw))  # (c, hp, sh, wp, sw, b), a view
            else:
                xs = x4.new_zeros((c, hp * sh, wp * sw, b))
                xs[:, :h, :w].copy_(x4)
                xs = xs.view(c, hp, sh, wp, sw, b)
            # phase images, channel ci*P + p, in a padded CHWN buffer (one copy of the phases read)
            xc = _empty_chwn(c * len(phases), hp, wp, b)
            cs = xc.stride(0) if xc.shape[0] > 1 else hp * wp * b
            xcv = xc.unflatten(0, (c, len(phases)))
            for i, p in enumerate(phases):
                xcv[:, i].copy_(xs[:, :, p // sw, :, p % sw])
        if self._packed_pointwise:  # a strided 1x1: its one phase image is the input of a plain 1x1
            return _sparse_pointwise_chwn(self, xc, cs, meta, block, residual).permute(3, 0, 1, 2)
        out = _direct_conv_chwn(self, xc, cs, meta, (self.out_channels, ho, wo, b), residual)
        return out.permute(3, 0, 1, 2)


class SparseLinear(SparseInferenceLayer):
    """An ``nn.Linear`` for inference, dense or CSR weight @ transposed activations."""

    def __init__(self, linear: nn.Linear) -> None:
        reason = self.unsupported_reason(linear)
        if reason:
            raise ValueError(f"cannot convert {type(linear).__name__}: {reason}")
        super().__init__(linear.weight, linear.bias)
        self.in_features = linear.in_features
        self.out_features = linear.out_features

    def _check_input(self, x: Tensor) -> None:
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"SparseLinear expects an input whose last dimension is {self.in_features}, got shape "
                f"{tuple(x.shape)}: pass the activation the original linear took"
            )

    @staticmethod
    def unsupported_reason(linear: nn.Module) -> str | None:
        """Why this module cannot become a SparseLinear, or None when it can."""
        if type(linear) is not nn.Linear:
            return f"{type(linear).__name__} is not a plain nn.Linear (its forward may differ)"
        return None

    def _dense(self, x: Tensor) -> Tensor:
        self.paths[x.shape[0]] = "dense (F.linear)"
        return F.linear(x, self.weight, self.bias)

    def _sparse(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        xt = x.reshape(-1, self.in_features).t()
        if xt.shape[1] > 1:
            xt = xt.contiguous()  # CSR @ dense is fast for a row-major right operand only
        csr = self._csr()
        out = torch.mm(csr, xt) if self.bias is None else torch.addmm(self.bias.unsqueeze(1), csr, xt)
        return out.t().contiguous().view(*lead, self.out_features)

    def _direct(self, x: Tensor, block: int | None = None, residual: Tensor | None = None) -> Tensor:
        self.paths[x.shape[0] if x.dim() > 1 else 1] = "direct (sparse GEMM)"
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        xt = x2.t() if x2.shape[0] == 1 else x2.t().contiguous()  # (in, B): CHWN with H = W = 1
        meta = self._direct_meta.get("linear")
        if meta is None:
            zero = torch.zeros(1, dtype=torch.int32)
            values = self.values.to(torch.float32).contiguous()
            meta = self._direct_meta["linear"] = (self.crow_indices, zero, zero.clone(), self.col_indices, values, 1)
        x4 = xt.reshape(self.in_features, 1, 1, -1)
        out = _direct_conv_chwn(self, x4, xt.shape[1], meta, (self.out_features, 1, 1, xt.shape[1]))
        return out.view(self.out_features, -1).t().contiguous().view(*lead, self.out_features)


class ChwnMaxPool2d(nn.Module):
    """``nn.MaxPool2d`` (no padding) that keeps a CHWN-layout input in CHWN (the direct kernel's layout).

    torch's max-pool would copy such an input to NCHW and the next direct layer would
    copy it back. A contiguous NCHW float32 batch runs the native NCHW pool (torch's is
    slow for NCHW); any other input goes to ``F.max_pool2d`` unchanged.
    """

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        pair = nn.modules.utils._pair
        self.kernel_size, self.stride = pair(pool.kernel_size), pair(pool.stride or pool.kernel_size)

    @staticmethod
    def supports(pool: nn.Module) -> bool:
        if type(pool) is not nn.MaxPool2d or pool.ceil_mode or pool.return_indices:
            return False
        pair = nn.modules.utils._pair
        return pair(pool.padding) == (0, 0) and pair(pool.dilation) == (1, 1)

    def forward(self, x: Tensor) -> Tensor:
        lib = native_library() if x.dim() == 4 and x.shape[0] > 1 and x.dtype == torch.float32 else None
        if lib is None or x.device.type != "cpu":
            return F.max_pool2d(x, self.kernel_size, self.stride)
        n, c, h, w = x.shape
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
        cs = _chwn_channel_stride(x.permute(1, 2, 3, 0))
        if cs is None:
            if not x.is_contiguous():
                return F.max_pool2d(x, self.kernel_size, self.stride)
            # NCHW (a dense layer's output): torch's NCHW max-pool is ~15x slower than its channels-last one
            out = torch.empty((n, c, ho, wo), dtype=x.dtype)
            lib.fggp_maxpool_nchw_f32(x.data_ptr(), n * c, h, w, kh, kw, sh, sw, ho, wo, out.data_ptr(),
                                      torch.get_num_threads())
            return out
        out = _empty_chwn(c, ho, wo, n)
        ocs = out.stride(0) if c > 1 else ho * wo * n
        lib.fggp_maxpool_chwn_f32(
            x.data_ptr(), c, h, w, n, kh, kw, sh, sw, ho, wo, out.data_ptr(), cs, ocs, torch.get_num_threads()
        )
        return out.permute(3, 0, 1, 2)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class ChwnGlobalAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d(1)`` that reads a CHWN-layout input (the direct kernel's) as it lies.

    torch's pool on the permuted view took 3.1 ms for ResNet-50's last activation at batch 64
    (2048 x 4 x 4) on the benchmark machine; a mean over the (H*W) axis of the CHWN buffer 0.2 ms.
    Any other input goes to ``F.adaptive_avg_pool2d`` unchanged.
    """

    @staticmethod
    def supports(pool: nn.Module) -> bool:
        return type(pool) is nn.AdaptiveAvgPool2d and nn.modules.utils._pair(pool.output_size) == (1, 1)

    def forward(self, x: Tensor) -> Tensor:
        cs = _chwn_channel_stride(x.permute(1, 2, 3, 0)) if x.dim() == 4 and x.shape[0] > 1 else None
        if cs is None or not x.is_floating_point():
            return F.adaptive_avg_pool2d(x, 1)
        n, c, h, w = x.shape
        planes = x.permute(1, 2, 3, 0).as_strided((c, h * w, n), (cs, n, 1), x.storage_offset())
        return planes.mean(1).t().reshape(n, c, 1, 1)

