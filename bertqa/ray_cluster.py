"""Reaching Ray: an existing cluster (address), or a local one started for this process.

A local Ray is sized for a small machine: no dashboard (about 150 MB less and one process fewer),
no usage stats, Ray Serve's proxy errors rewritten as bertqa's JSON ones
(bertqa.serve.ray_proxy), an object store of at most 1 GB (bertqa moves text and answers through it, not
tensors), and the memory monitor left on, so that a replica that outgrows the machine is killed
and restarted rather than the whole machine swapping. Ray is imported here, lazily: the `ray`
extra, pip install 'bertqa[ray]'.
"""
from __future__ import annotations

import os
import sys

from bertqa.errors import BertQAError

LOCAL_OBJECT_STORE_BYTES = 1 << 30


def require_ray(what: str):
    """The ray module, or a BertQAError that says how to install it."""
    try:
        import ray
        from ray import data, serve  # noqa: F401
    except ImportError as e:
        raise BertQAError(f"{what} needs Ray Serve and Ray Data ({e.name} is not installed): "
                          "pip install 'bertqa[ray]'") from None
    return ray


def connect(address: str | None, what: str, num_cpus: int | None = None,
            object_store_bytes: int | None = None) -> bool:
    """ray.init against `address` (None: start a local Ray); True when this process started it."""
    ray = require_ray(what)
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:      # Ray's own proxy errors in bertqa's JSON (read when the proxy starts)
        os.environ.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", "bertqa.serve.ray_proxy:middlewares")
    kwargs = dict(log_to_driver=False, configure_logging=False)
    if address is None:
        # this machine's workers import bertqa from where this process does; a cluster's
        # nodes need bertqa installed (docs/scale-out.md)
        env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))}
        kwargs.update(num_cpus=num_cpus, include_dashboard=False, runtime_env={"env_vars": env},
                      object_store_memory=object_store_bytes or LOCAL_OBJECT_STORE_BYTES)
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as e:
        raise BertQAError(f"cannot reach the Ray cluster at {address}: {e}") from None
    except (ValueError, RuntimeError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise BertQAError(f"cannot start {where}: {str(e).splitlines()[0]}") from None
    return address is None


def disconnect() -> None:
    import ray
    if ray.is_initialized():
        ray.shutdown()       # a local Ray stops with it; a cluster keeps running
