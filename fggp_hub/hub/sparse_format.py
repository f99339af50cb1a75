"""A lossless compact encoding of a sparse state_dict inside one safetensors file.

Pure functions: no model, no hub. Every floating tensor is viewed as a 2-D matrix
``[rows, cols]`` (conv weights ``[out, in, kh, kw]`` flatten to ``[out, in*kh*kw]``,
1-D tensors are one row) and stored in whichever of three encodings is smallest:

``dense``
    the tensor itself, under its own name (small or dense tensors: biases, norms, ...).
``bitmask`` (the compressed-tensors "sparse-bitmask" layout)
    ``<name>:bitmask`` uint8 ``[rows, ceil(cols / 8)]`` (``numpy.packbits`` little-endian
    along each row) and ``<name>:values``, the stored entries in row-major order.
``csr``
    ``<name>:row_ptr`` (``rows + 1``; uint8, int16, int32 or int64: the narrowest that
    holds the count), ``<name>:col_idx`` (int16 when ``cols <= 32768``, else int32/int64)
    and ``<name>:values``.

An entry is "stored" when its bit pattern is not all zeros, so ``-0.0`` and NaN
payloads survive: decoding is bit-identical to the input for any tensor.

The file's metadata holds ``format`` (``fggp-sparse``), ``format_version`` and
``fggp_sparse_index``: JSON mapping each tensor name to its encoding, shape and dtype.

Sizes per weight of ``n`` fp32 entries at sparsity ``s``: dense ``4n`` bytes, bitmask
``n/8 + 4n(1-s)``, CSR-int16 ``6n(1-s)``; at 95% CSR is 13x smaller than dense.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as _st_save

from .errors import CorruptCheckpointError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "encode",
    "decode",
    "save_file",
    "load_file",
    "save_bytes",
    "choose_encoding",
    "canonical_zeros",
]

FORMAT_NAME = "fggp-sparse"
FORMAT_VERSION = 1
_INDEX_KEY = "fggp_sparse_index"
_SEP = ":"
# Approximate safetensors header cost of one extra tensor entry (JSON key, dtype, shape, offsets).
_HEADER_BYTES_PER_KEY = 64
_SPARSE_DTYPES = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64}
_DTYPE_NAMES = {
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float32: "float32",
    torch.float64: "float64",
}


# --------------------------------------------------------------------------- helpers
def _as_matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], math.prod(shape[1:])


def _stored_mask(t: torch.Tensor) -> torch.Tensor:
    """Entries whose bit pattern is not all zeros (so -0.0 and NaNs count as stored)."""
    return t.contiguous().view(_SPARSE_DTYPES[t.dtype]) != 0


def _narrow_int(max_value: int, allow_uint8: bool) -> torch.dtype:
    if allow_uint8 and max_value <= 255:
        return torch.uint8
    if max_value <= 32767:
        return torch.int16
    if max_value <= 2**31 - 1:
        return torch.int32
    return torch.int64


def _sizes(rows: int, cols: int, nnz: int, itemsize: int, name: str) -> dict[str, int]:
    """Encoded bytes of each encoding (data plus header entries)."""
    key = len(name) + _HEADER_BYTES_PER_KEY
    n = rows * cols
    ptr = torch.empty((), dtype=_narrow_int(nnz, True)).element_size()
    idx = torch.empty((), dtype=_narrow_int(max(cols - 1, 0), False)).element_size()
    return {
        "dense": n * itemsize + key,
        "bitmask": rows * ((cols + 7) // 8) + nnz * itemsize + 2 * (key + 8),
        "csr": (rows + 1) * ptr + nnz * (idx + itemsize) + 3 * (key + 8),
    }


def choose_encoding(t: torch.Tensor, name: str = "w") -> str:
    """``dense``, ``bitmask`` or ``csr``: whichever stores ``t`` in the fewest bytes."""
    if t.dtype not in _SPARSE_DTYPES or t.ndim == 0 or t.numel() == 0:
        return "dense"
    rows, cols = _as_matrix_shape(tuple(t.shape))
    nnz = int(_stored_mask(t).sum())
    sizes = _sizes(rows, cols, nnz, t.element_size(), name)
    return min(sizes, key=lambda k: (sizes[k], k != "dense"))


def canonical_zeros(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy with every floating ``-0.0`` turned into ``+0.0``.

    Masks multiplied into weights leave ``-0.0`` where a negative weight was pruned; the
    encoding is bit-exact, so it would store those as values. ``export`` writes both
    weight files from this canonical copy (numerically the same model).
    """
    out = {}
    for name, t in state_dict.items():
        t = t.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        if t.is_floating_point():
            t[t == 0] = 0.0
        out[name] = t
    return out


# --------------------------------------------------------------------------- encode
def _encode_one(name: str, t: torch.Tensor, encoding: str) -> tuple[dict[str, torch.Tensor], dict]:
    shape = list(t.shape)
    if encoding == "dense":
        return {name: t.contiguous()}, {"encoding": "dense"}
    rows, cols = _as_matrix_shape(tuple(t.shape))
    flat = t.contiguous().reshape(rows, cols)
    mask = _stored_mask(flat)
    values = flat[mask].contiguous()  # row-major order, bit patterns copied as they are
    info = {"encoding": encoding, "shape": shape, "dtype": _DTYPE_NAMES[t.dtype]}
    if encoding == "bitmask":
        packed = np.packbits(mask.numpy(), axis=1, bitorder="little")
        return {f"{name}{_SEP}bitmask": torch.from_numpy(packed), f"{name}{_SEP}values": values}, info
    counts = mask.sum(dim=1)
    nnz = int(counts.sum())
    row_ptr = torch.zeros(rows + 1, dtype=torch.int64)
    torch.cumsum(counts, dim=0, out=row_ptr[1:])
    col_idx = mask.nonzero()[:, 1]
    return {
        f"{name}{_SEP}row_ptr": row_ptr.to(_narrow_int(nnz, True)),
        f"{name}{_SEP}col_idx": col_idx.to(_narrow_int(max(cols - 1, 0), False)),
        f"{name}{_SEP}values": values,
    }, info


def encode(
    state_dict: Mapping[str, torch.Tensor], encodings: Mapping[str, str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Encode a state_dict; returns the tensors to store and the safetensors metadata.

    ``encodings`` forces an encoding for some names (tests, benchmarks); otherwise
    each tensor gets the smallest one.
    """
    tensors: dict[str, torch.Tensor] = {}
    index: dict[str, dict] = {}
    for name, t in state_dict.items():
        if _SEP in name:
            raise ValueError(f"tensor name {name!r} contains {_SEP!r}, which the compact format reserves")
        t = t.detach().cpu()
        encoding = (encodings or {}).get(name) or choose_encoding(t, name)
        if encoding != "dense" and (t.dtype not in _SPARSE_DTYPES or t.ndim == 0):
            raise ValueError(f"{name}: {encoding} needs a floating tensor with at least one dimension")
        parts, info = _encode_one(name, t, encoding)
        for key, value in parts.items():
            if key in tensors:
                raise ValueError(f"tensor name collision on {key!r}")
            tensors[key] = value
        index[name] = info
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        _INDEX_KEY: json.dumps(index, separators=(",", ":")),
    }
    return tensors, metadata


# --------------------------------------------------------------------------- decode
def _corrupt(name: str, what: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"compact weights are corrupt: {name}: {what}; re-download or re-export the model")


def _decode_one(name: str, info: dict, get, budget: list[int] | None = None) -> torch.Tensor:
    """Decode one tensor; ``budget`` (a one-item list) is the number of entries still allowed to be allocated."""
    encoding = info.get("encoding")
    if encoding == "dense":
        return get(name)
    shape_raw, dtype_raw = info.get("shape"), info.get("dtype")
    if (not isinstance(shape_raw, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape_raw)
            or dtype_raw not in _DTYPE_NAMES.values()):
        raise _corrupt(name, "bad index entry (shape must be a list of integers, dtype a float type)")
    shape, dtype = list(shape_raw), getattr(torch, dtype_raw)
    if not shape or min(shape) < 0:
        raise _corrupt(name, f"unsupported dtype/shape {dtype_raw} {shape}")
    numel = math.prod(shape)
    if budget is not None:  # checked before anything of that size is allocated
        if numel > budget[0]:
            raise _corrupt(name, f"declares {numel:,} entries, more than the file or the architecture allows")
        budget[0] -= numel
    rows, cols = _as_matrix_shape(tuple(shape))
    values = get(f"{name}{_SEP}values")
    if values.dtype != dtype or values.ndim != 1:
        raise _corrupt(name, f"values are {values.dtype} with {values.ndim} dims, expected 1-D {dtype}")
    out = torch.zeros(rows * cols, dtype=dtype)
    if encoding == "bitmask":
        packed = get(f"{name}{_SEP}bitmask")
        if packed.dtype != torch.uint8 or tuple(packed.shape) != (rows, (cols + 7) // 8):
            raise _corrupt(name, f"bitmask has shape {tuple(packed.shape)}")
        bits = np.unpackbits(packed.numpy(), axis=1, count=cols, bitorder="little")  # 0/1 bytes: viewed as bool, not copied
        mask = torch.from_numpy(bits).view(torch.bool).reshape(-1)
        marked = int(torch.count_nonzero(mask))
        if marked != values.numel():
            raise _corrupt(name, f"bitmask marks {marked} entries but {values.numel()} values are stored")
        out.masked_scatter_(mask, values)
    elif encoding == "csr":
        row_ptr = get(f"{name}{_SEP}row_ptr").to(torch.int64)
        col_idx = get(f"{name}{_SEP}col_idx").to(torch.int64)
        nnz = values.numel()
        if row_ptr.shape != (rows + 1,) or col_idx.shape != (nnz,):
            raise _corrupt(name, "row_ptr / col_idx lengths do not match the shape")
        counts = row_ptr.diff()
        if int(row_ptr[0]) != 0 or int(row_ptr[-1]) != nnz or bool((counts < 0).any()):
            raise _corrupt(name, "row_ptr is not a valid prefix sum")
        if nnz:
            low, high = torch.aminmax(col_idx)
            if int(low) < 0 or int(high) >= cols:
                raise _corrupt(name, "column index out of range")
        # flat position of each value; with every column in range, the positions increase strictly
        # exactly when the columns do within each row (a new row starts past the previous row's end)
        flat = torch.repeat_interleave(torch.arange(rows) * cols, counts, output_size=nnz) + col_idx
        if nnz > 1 and not bool((flat[1:] > flat[:-1]).all()):
            raise _corrupt(name, "column indices are not strictly increasing within a row")
        out[flat] = values
    else:
        raise _corrupt(name, f"unknown encoding {encoding!r}")
    return out.reshape(shape)


def _check_metadata(metadata: Mapping[str, str] | None, source: str) -> dict[str, dict]:
    metadata = metadata or {}
    if metadata.get("format") != FORMAT_NAME or _INDEX_KEY not in metadata:
        raise CorruptCheckpointError(f"{source} is not an {FORMAT_NAME} file (its safetensors metadata has no format={FORMAT_NAME})")
    try:
        version = int(metadata.get("format_version", "0"))
    except ValueError:
        version = -1
    if not 1 <= version <= FORMAT_VERSION:
        raise CorruptCheckpointError(
            f"{source} uses {FORMAT_NAME} version {metadata.get('format_version')}, this fggp-hub reads up to "
            f"{FORMAT_VERSION}: upgrade fggp-hub or load the dense model.safetensors (compact=False)"
        )
    try:
        index = json.loads(metadata[_INDEX_KEY])
    except json.JSONDecodeError:
        raise CorruptCheckpointError(f"{source}: the {FORMAT_NAME} index is not valid JSON") from None
    if not isinstance(index, dict) or not all(isinstance(v, dict) for v in index.values()):
        raise CorruptCheckpointError(f"{source}: the {FORMAT_NAME} index is malformed")
    return index


def decode(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`encode`."""
    index = _check_metadata(metadata, "the tensors")
    used: set[str] = set()

    def get(key: str) -> torch.Tensor:
        if key not in tensors:
            raise _corrupt(key, "missing tensor")
        used.add(key)
        return tensors[key]

    out = {name: _decode_one(name, info, get) for name, info in index.items()}
    extra = set(tensors) - used
    if extra:
        raise _corrupt(sorted(extra)[0], f"{len(extra)} tensor(s) not described by the index")
    return out


# --------------------------------------------------------------------------- files
def save_file(
    state_dict: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Encode and write ``path``; returns the per-tensor encodings chosen."""
    tensors, meta = encode(state_dict)
    extra = {k: str(v) for k, v in (metadata or {}).items() if k not in meta}
    Path(path).write_bytes(canonical_header(_st_save(tensors, metadata={**extra, **meta})))
    return {name: info["encoding"] for name, info in json.loads(meta[_INDEX_KEY]).items()}


def save_bytes(state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """Encode into safetensors bytes (for size measurements)."""
    tensors, meta = encode(state_dict)
    return canonical_header(_st_save(tensors, metadata={**{k: str(v) for k, v in (metadata or {}).items()}, **meta}))


def canonical_header(data: bytes) -> bytes:
    """The same safetensors bytes with the metadata keys sorted, so equal weights hash equal.

    safetensors serialises ``__metadata__`` from a Rust HashMap, whose order changes from one
    process to the next; the tensor entries are already in a fixed order. The sorted header
    is padded with spaces to the original length (safetensors' own padding), so offsets hold.
    """
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > n:  # cannot happen for a pure reordering; keep the original rather than break offsets
        return data
    return data[:8] + text + b" " * (n - len(text)) + data[8 + n:]


#: Without expected shapes, a compact file may decode to at most this many entries per byte it holds (+ a fixed allowance).
MAX_ENTRIES_PER_BYTE = 256
_ENTRY_ALLOWANCE = 16 * 2**20


def load_file(path: str | Path, expected: Mapping[str, tuple[tuple[int, ...], torch.dtype]] | None = None,
              architecture: str = "the architecture") -> dict[str, torch.Tensor]:
    """Read and decode a compact file (safetensors only; nothing is unpickled).

    ``expected`` (name -> (shape, dtype), e.g. from the model config.json describes) is checked
    against the index before any tensor is allocated, so a crafted few-byte file cannot declare
    gigabytes; without it the decoded size is bounded by the file's size. Every returned tensor
    owns its memory (none is a view of the file, which safetensors may memory-map).
    """
    path = Path(path)
    budget = [path.stat().st_size * MAX_ENTRIES_PER_BYTE + _ENTRY_ALLOWANCE] if path.is_file() else None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            index = _check_metadata(f.metadata(), path.name)
            if expected is not None:
                _check_expected(index, expected, path.name, architecture)
            keys = set(f.keys())

            def get(key: str) -> torch.Tensor:
                if key not in keys:
                    raise _corrupt(key, "missing tensor")
                keys.discard(key)
                return f.get_tensor(key)

            out = {name: _decode_one(name, info, get, budget) for name, info in index.items()}
            for name, info in index.items():  # safetensors may map the file: own copies, never views of it
                if info.get("encoding") == "dense":
                    out[name] = out[name].clone()
    except SafetensorError as err:
        raise CorruptCheckpointError(f"{path.name} is not a readable safetensors file ({err}); re-download it") from None
    if keys:
        raise _corrupt(sorted(keys)[0], f"{len(keys)} tensor(s) not described by the index")
    return out


def _check_expected(index: Mapping[str, dict], expected: Mapping[str, tuple[tuple[int, ...], torch.dtype]], source: str,
                    architecture: str) -> None:
    for name, info in index.items():
        if name not in expected:
            raise CorruptCheckpointError(f"{source} does not fit {architecture}: tensor {name[:80]!r} is not one of its weights; re-export the model")
        if info.get("encoding") == "dense":
            continue  # stored as it is: its size is the file's, checked by safetensors
        shape, dtype = expected[name]
        if info.get("shape") != list(shape) or info.get("dtype") != _DTYPE_NAMES.get(dtype):
            raise CorruptCheckpointError(f"{source} does not fit {architecture}: {name} is declared {info.get('dtype')} {info.get('shape')}, "
                                         f"the architecture has {_DTYPE_NAMES.get(dtype, dtype)} {list(shape)}; re-export the model")

