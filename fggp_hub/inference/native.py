"""The native direct sparse convolution kernel: built with the system C++ compiler on first use, cached.

The kernel is one small C++ file (``csrc/sparse_conv.cpp``) with a plain C ABI,
compiled with ``g++ -O3 -mavx2 -mfma -fopenmp`` into a shared library and called
through :mod:`ctypes`: no Python headers, no ninja and no torch headers are
needed, so it builds in about a second wherever a C++ compiler exists. The
library links ``libgomp.so.1``, which torch has already loaded, so the kernel and
torch share one OpenMP thread pool.

Build products live in ``$FGGP_HUB_NATIVE_CACHE`` (default
``~/.cache/fggp_hub/native``), keyed by the source's hash and the compiler
command. ``FGGP_HUB_NATIVE=0`` disables the kernel (the pure-torch kernels
remain). Anything that goes wrong leaves :func:`native_status` with the reason
and the layers on their torch kernels.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from ..constants import ENV_NATIVE as NATIVE_ENV
from ..constants import ENV_MALLOC_TUNE
from ..constants import ENV_NATIVE_CACHE as NATIVE_CACHE_ENV
from ..constants import home_dir

__all__ = ["native_library", "native_status", "keep_freed_memory", "NATIVE_ENV", "NATIVE_CACHE_ENV", "MALLOC_ENV"]

#: ``FGGP_HUB_MALLOC_TUNE=0`` leaves glibc's malloc settings alone (see :func:`keep_freed_memory`).
MALLOC_ENV = ENV_MALLOC_TUNE

_SOURCE = Path(__file__).with_name("csrc") / "sparse_conv.cpp"
_FLAGS = ["-O3", "-std=c++17", "-mavx2", "-mfma", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno"]
_ABI_VERSION = 13

_lock = threading.Lock()
_state: dict[str, Any] = {"tried": False, "lib": None, "reason": "not built yet", "path": None}


def _cache_dir() -> Path:
    root = os.environ.get(NATIVE_CACHE_ENV)
    if root:
        return Path(root)
    return home_dir() / "native"


def _cpu_has_avx2_fma() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return {"avx2", "fma"} <= flags
    except OSError:
        pass
    return False


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _build(cxx: str) -> Path:
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([Path(cxx).name, *_FLAGS]).encode()).hexdigest()[:16]
    out = _cache_dir() / f"libfggp_sparse_{key}.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the target and rename: concurrent first uses never load a half-written file.
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cxx, *_FLAGS, str(_SOURCE), "-o", tmp], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            tail = " ".join((proc.stderr or proc.stdout).split())[-400:]
            raise RuntimeError(f"{Path(cxx).name} failed ({tail})")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _bind(lib: ctypes.CDLL) -> None:
    p, i, q = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
    lib.fggp_sparse_abi_version.restype = i
    lib.fggp_sparse_conv_chwn_f32.argtypes = [p, i, i, i, i, i, i, i, i, p, p, p, p, p, p, p, p, i, q, q, q, p, i]
    lib.fggp_sparse_conv_chwn_f32.restype = None
    lib.fggp_maxpool_chwn_f32.argtypes = [p, i, i, i, i, i, i, i, i, i, i, p, q, q, i]
    lib.fggp_maxpool_chwn_f32.restype = None
    lib.fggp_nchw_to_chwn_f32.argtypes = [p, i, i, i, q, q, p, q, i]
    lib.fggp_nchw_to_chwn_f32.restype = None
    lib.fggp_chwn_to_nchw_f32.argtypes = [p, i, i, i, q, p, q, q, i]
    lib.fggp_chwn_to_nchw_f32.restype = None
    lib.fggp_maxpool_nchw_f32.argtypes = [p, i, i, i, i, i, i, i, i, i, p, i]
    lib.fggp_maxpool_nchw_f32.restype = None
    lib.fggp_polyphase_chwn_f32.argtypes = [p, i, i, i, i, q, i, i, p, p, i, i, i, p, q, i]
    lib.fggp_polyphase_chwn_f32.restype = None
    lib.fggp_winograd_input_f32.argtypes = [p, i, i, i, i, q, i, i, i, i, i, p, i]
    lib.fggp_winograd_input_f32.restype = None
    lib.fggp_winograd_output_f32.argtypes = [p, i, i, i, i, i, i, i, p, p, q, p, q, i, i]
    lib.fggp_winograd_output_f32.restype = None
    lib.fggp_dense_pointwise_f32.argtypes = [p, i, i, p, q, q, p, p, q, p, q, i, i]
    lib.fggp_dense_pointwise_f32.restype = None
    lib.fggp_sparse_pointwise_f32.argtypes = [p, i, i, p, p, i, i, p, q, q, p, p, q, p, q, i, i]
    lib.fggp_sparse_pointwise_f32.restype = None
    lib.fggp_sparse_conv_packed_f32.argtypes = [p, i, i, i, i, q, i, i, i, i, i, i, i, i, i, i, i, i, i, i,
                                                p, p, p, p, p, p, p, q, p, q, i, i]
    lib.fggp_sparse_conv_packed_f32.restype = ctypes.c_int


def native_library() -> ctypes.CDLL | None:
    """The loaded kernel library, building it on first use; None when unavailable (see :func:`native_status`)."""
    if _state["tried"]:
        return _state["lib"]
    with _lock:
        if _state["tried"]:
            return _state["lib"]
        try:
            if os.environ.get(NATIVE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
                raise RuntimeError(f"disabled by {NATIVE_ENV}=0")
            if not _cpu_has_avx2_fma():
                raise RuntimeError("the CPU lacks AVX2/FMA (or is not x86-64 Linux)")
            cxx = _compiler()
            if cxx is None:
                raise RuntimeError("no C++ compiler found (install g++ or set CXX)")
            import torch  # noqa: F401  torch first: its libgomp.so.1 is the one the library binds to

            path = _build(cxx)
            lib = ctypes.CDLL(str(path))
            _bind(lib)
            if lib.fggp_sparse_abi_version() != _ABI_VERSION:
                raise RuntimeError(f"{path} has another ABI version; delete it to rebuild")
            _state.update(lib=lib, path=str(path), reason=None)
        except Exception as exc:  # noqa: BLE001  any failure: keep the torch kernels, remember why
            _state.update(lib=None, reason=" ".join(str(exc).split()) or type(exc).__name__)
        _state["tried"] = True
    return _state["lib"]


def native_status() -> dict[str, Any]:
    """Whether the direct kernel is in use, the library path, or why not."""
    lib = native_library()
    return {"available": lib is not None, "library": _state["path"], "reason": _state["reason"]}


_malloc_state: dict[str, Any] = {}


def keep_freed_memory() -> dict[str, Any]:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the OS (once per process).

    torch's CPU tensors come from malloc, and glibc serves every block over its mmap
    threshold (at most 32 MiB) with a fresh mmap, unmapped again on free: each batch-64
    activation (64 MiB for 256 channels at 32 x 32) is then page-faulted in anew on
    every layer of every call. Measured on the 2-core benchmark machine: allocating and
    filling a 64 MiB tensor 107 ms fresh vs 15 ms reused; a 1x1 sparse layer 157 ms ->
    59 ms. ``mallopt(M_MMAP_MAX, 0)`` and a 1 GiB ``M_TRIM_THRESHOLD`` keep large blocks
    in the heap (glibc still falls back to mmap when the heap cannot grow). The setting is
    process-wide and also speeds up dense torch ops; ``FGGP_HUB_MALLOC_TUNE=0`` opts out.
    Returns what was done (``inference_report()["malloc"]``).
    """
    if _malloc_state:
        return dict(_malloc_state)
    with _lock:
        if _malloc_state:
            return dict(_malloc_state)
        state: dict[str, Any] = {"tuned": False}
        try:
            if os.environ.get(MALLOC_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
                raise RuntimeError(f"disabled by {MALLOC_ENV}=0")
            libc = ctypes.CDLL(None)
            mallopt = getattr(libc, "mallopt", None)
            if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):
                raise RuntimeError("not glibc")
            m_trim_threshold, m_mmap_max = -1, -4
            if not (mallopt(m_mmap_max, 0) and mallopt(m_trim_threshold, 1 << 30)):
                raise RuntimeError("mallopt refused")
            state = {"tuned": True, "settings": "M_MMAP_MAX=0, M_TRIM_THRESHOLD=1 GiB"}
        except Exception as exc:  # noqa: BLE001  an optimisation only: say why and go on
            state = {"tuned": False, "reason": " ".join(str(exc).split()) or type(exc).__name__}
        _malloc_state.update(state)
    return dict(_malloc_state)
