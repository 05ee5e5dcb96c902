"""Linear backends, registered by name in one place and imported lazily.

Adding a backend is one module with a LinearBackend subclass and one line here (or one
`register` call at run time); the parity suite in tests/test_backend_parity.py then covers it,
`--backend NAME` runs it on a target, and `bertqa bench --configs NAME-int` times it. A backend
whose runtime is missing (no compiler output, no GPU, no NPU) reports why through `available()`
and never breaks the others.
"""
from __future__ import annotations

import importlib

from bertqa.errors import TargetUnavailable

# name -> "module:Class" (or, registered at run time, the class itself)
REGISTRY: dict[str, object] = {
    "cpu-reference": "bertqa.backends.cpu_reference:ReferenceBackend",
    "customcpu": "bertqa.backends.customcpu:CustomCPUBackend",
    "aie": "bertqa.backends.aie:AIEBackend",
    "gpu": "bertqa.backends.gpu:GpuBackend",
}

BUILT_IN = tuple(REGISTRY)
_instances: dict = {}


def backend_names() -> list[str]:
    return list(REGISTRY)


def register(name: str, backend) -> None:
    """Register a backend under `name`: "module:Class", or a LinearBackend subclass itself."""
    if name in REGISTRY:
        raise ValueError(f"a backend named {name!r} is registered already")
    REGISTRY[name] = backend


def unregister(name: str) -> None:
    """Forget a backend registered at run time (and its instance)."""
    REGISTRY.pop(name, None)
    _instances.pop(name, None)


def load_backend(name: str):
    """The backend object for `name`, whether or not it is available here."""
    if name not in REGISTRY:
        raise TargetUnavailable(f"unknown Linear backend {name!r}; registered: {', '.join(REGISTRY)}")
    if name not in _instances:
        where = REGISTRY[name]
        if isinstance(where, str):
            module_name, _, cls_name = where.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as e:
                raise TargetUnavailable(f"backend {name!r} cannot be imported: {e}") from e
            where = getattr(module, cls_name)
        _instances[name] = where()
    return _instances[name]


def get_backend(name: str):
    """The backend for `name`, or TargetUnavailable saying why it cannot run here."""
    backend = load_backend(name)
    ok, reason = backend.available()
    if not ok:
        raise TargetUnavailable(f"backend {name!r} is not available here: {reason}")
    return backend
