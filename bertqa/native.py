"""The one owner of the native extension bertqa._native (csrc/, built by `pip install .`).

Every part of bertqa that runs native code reaches the extension through this module: the
customcpu backend (its int8 Linear), the host kernels (bertqa.attention), and the native GELU
that cpu-reference and aie apply with gelu='native'. It holds why the extension cannot run here
(`unavailable()`), the CPU's ISA paths (`cpu_features`, `select_isa`; tests patch the probe), and
the thread settings of the native runtime (`set_threads` for the process, `set_thread_threads`
for the calling thread alone).

Threads: the extension is built with OpenMP and resolves to the libgomp that torch loaded, so
by default the native kernels and torch's intra-op work share one pool of
`torch.get_num_threads()` threads (or `set_threads`, or the calling thread's own count). A
forward whose heavy parts are all native runs its native kernels on the extension's own pool
(csrc/thread_pool.h) and torch's few other ops on the calling thread (`torch_on_caller`). A
contention guard in the extension (csrc/thread_runtime.cpp) runs the native kernels on one
thread for a while whenever a sampled call shows that another process took a core from one of
its threads; BERTQA_THREAD_GUARD=0 or extension().thread_guard(False) turns it off.

GELU modes (outside docs/quantization.md): 'torch' is torch.nn.functional.gelu; 'native' is the
extension's erf GELU (csrc/vec_gelu.h, within ~3e-7 * |y| of exact erf), which customcpu fuses
into its GEMM's store and the other CPU backends apply after dequantization, so that they agree
bit for bit.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch

from bertqa.errors import TargetUnavailable

ISA_PATHS = ("avx512vnni", "avx2", "scalar")     # fastest first
ISA_ENV = "BERTQA_ISA"
THREAD_GUARD_ENV = "BERTQA_THREAD_GUARD"
GELU_MODES = ("torch", "native")

_module = None


def extension():
    """The extension module bertqa._native; ImportError where it is not built."""
    global _module
    if _module is None:
        from bertqa import _native as module
        if os.environ.get(THREAD_GUARD_ENV, "1") == "0":
            module.thread_guard(False)
        _module = module
    return _module


def unavailable() -> str | None:
    """Why the extension cannot run here ('native extension not built: ...'), or None."""
    try:
        extension()
    except ImportError as e:
        return f"native extension not built: {e}"
    return None


def set_threads(n: int) -> None:
    """Threads for torch's intra-op pool and the native kernels (one shared OpenMP pool)."""
    assert n >= 1, f"threads must be >= 1, got {n}"
    torch.set_num_threads(n)
    if unavailable() is None:
        extension().set_threads(n)


def set_thread_threads(n: int) -> bool:
    """Threads for the work started from the calling thread alone: the native kernels and
    torch's OpenMP regions (the thread's own OpenMP setting); other threads keep theirs: e.g.
    two callers on one core each (a direct reference of bertqa.bench.load_serve). False, changing nothing, where the extension is not built (torch has no per-thread count:
    its set_num_threads would change every thread's)."""
    assert n >= 1, f"threads must be >= 1, got {n}"
    if unavailable() is not None:
        return False
    torch.get_num_threads()        # torch sets a thread's OpenMP count on its first use there:
    extension().set_thread_threads(n)   # after that, so that it does not undo this
    return True


@contextmanager
def torch_on_caller():
    """Within: torch's OpenMP regions started from the calling thread run on that thread alone,
    while the native kernels keep its present thread count, on the native pool (not OpenMP).
    For a forward whose heavy parts are all native (bertqa.attention, HostKernels.whole_layer):
    torch's pool then stays asleep, so the forward is as fast from any thread, idle or beside a
    busy process (docs/speed.md, "Any thread, any load")."""
    ext = extension()
    torch.get_num_threads()        # torch's first use on a thread sets its OpenMP count: before
    saved = ext.begin_native_forward(1)
    try:
        yield
    finally:
        ext.end_native_forward(*saved)


def cpu_features() -> dict:
    """{'avx512vnni': bool, 'avx2': bool, 'scalar': True}: the ISA paths this CPU can run."""
    return dict(extension().cpu_features())


def select_isa(requested: str | None = None) -> str:
    """The ISA path to run: `requested`, else $BERTQA_ISA, else the best the CPU runs."""
    requested = requested or os.environ.get(ISA_ENV) or None
    features = cpu_features()
    if requested is None:
        return next(isa for isa in ISA_PATHS if features.get(isa))
    if requested not in ISA_PATHS:
        raise ValueError(f"unknown ISA path {requested!r}; choose one of {', '.join(ISA_PATHS)}")
    if not features.get(requested):
        raise TargetUnavailable(f"this CPU cannot run the {requested} path of customcpu")
    return requested


def native_gelu(y: torch.Tensor) -> torch.Tensor:
    """gelu(y) in place (y: contiguous fp32 on the CPU), computed as the fused epilogue of this
    CPU's ISA path computes it; returns y."""
    assert y.dtype == torch.float32 and y.is_contiguous() and y.device.type == "cpu", \
        "native_gelu takes a contiguous fp32 CPU tensor"
    extension().gelu(y.detach().numpy(), select_isa())
    return y


def apply_gelu(y: torch.Tensor, mode: str) -> torch.Tensor:
    """The GELU of a backend's gelu mode ('torch' or 'native') on y."""
    if mode == "native":
        return native_gelu(y.contiguous() if y.dtype == torch.float32 else y.float().contiguous())
    return torch.nn.functional.gelu(y)


def check_gelu_mode(backend: str, gelu: str) -> None:
    """A clear error for a gelu mode that does not exist, or needs the extension where it is not built."""
    if gelu not in GELU_MODES:
        raise TargetUnavailable(f"{backend} gelu must be one of {', '.join(GELU_MODES)}, got {gelu!r}")
    why = unavailable() if gelu == "native" else None
    if why:
        raise TargetUnavailable(f"{backend} gelu='native' needs the native extension ({why})")
