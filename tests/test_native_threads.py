"""Where the native kernels' regions run (csrc/thread_pool.h): torch's OpenMP pool by default,
the extension's own pool within bertqa.native.torch_on_caller: callers from many threads at
once on either, a forked child, the counts the scope keeps and restores, and which targets run
their forward that way."""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading

import numpy as np
import pytest
import torch

from bertqa import attention, native
from bertqa.model.bert import random_model
from bertqa.quant.linear import linear_weights
from bertqa.quant.spec import QuantSpec
from bertqa.targets import prepare_target as prepare

from native_support import SMALL, backend, needs_native, small_inputs

pytestmark = needs_native


def layer_and_input(seed=0, m=200, k=768, n=1024):
    g = torch.Generator().manual_seed(seed)
    lw = linear_weights(torch.randn(n, k, generator=g), torch.randn(n, generator=g),
                        QuantSpec(shift=9), "int", name="layer")
    return backend.prepare(lw), torch.randn(m, k, generator=g)


@pytest.mark.parametrize("pool", ["openmp", "native"])
def test_callers_on_many_threads_at_once_get_the_results_of_one(pool):
    handle, x = layer_and_input()
    alone = backend.run_debug(handle, x)["y"]
    results, errors = [], []
    start = threading.Barrier(4)
    scope = native.torch_on_caller if pool == "native" else contextlib.nullcontext

    def call():
        try:
            start.wait()
            with scope():
                for _ in range(5):              # on the native pool some callers run alone
                    results.append(backend.run_debug(handle, x)["y"])
        except Exception as e:                  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 20
    assert all(torch.equal(y, alone) for y in results)


def test_the_pool_starts_its_threads_once():
    ext = native.extension()
    handle, x = layer_and_input(m=64)
    try:
        ext.set_threads(3)
        ext.thread_guard(False)                 # three threads, whatever the machine's load
        with native.torch_on_caller():
            backend.run_debug(handle, x)
            started = ext.pool_threads()
            assert started >= 2                 # the caller is the third
            for _ in range(3):
                backend.run_debug(handle, x)
        assert ext.pool_threads() == started
    finally:
        ext.set_threads(0)
        ext.thread_guard(os.environ.get("BERTQA_THREAD_GUARD", "1") != "0")


def _child_runs_a_region(packed, x, queue):
    # numpy only and the native pool: OpenMP regions hang in a child forked after the parent
    # ran some (libgomp's pool is not fork-safe); the native pool is
    ext = native.extension()
    ext.thread_guard(False)                     # two threads, whatever the machine's load
    ext.set_threads(2)
    y = np.empty((x.shape[0], packed.N), np.float32)
    saved = ext.begin_native_forward(1)
    packed.run(x, y)
    ext.end_native_forward(*saved)
    queue.put((ext.pool_threads(), y))


def test_a_forked_child_runs_the_kernels_on_a_pool_of_its_own():
    handle, x = layer_and_input()
    native.extension().set_threads(2)
    try:
        with native.torch_on_caller():
            expected = backend.run_debug(handle, x)["y"].numpy()   # the parent's pool started
    finally:
        native.extension().set_threads(0)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_runs_a_region, args=(handle.packed, x.numpy(), queue))
    child.start()
    workers, got = queue.get(timeout=120)       # a child waiting on the parent's threads hangs
    child.join(timeout=60)
    assert child.exitcode == 0 and workers == 1 and np.array_equal(got, expected)


def test_torch_on_caller_keeps_the_native_count_and_restores_torchs():
    ext = native.extension()
    torch_before, native_before = torch.get_num_threads(), ext.get_threads()
    with native.torch_on_caller():
        assert torch.get_num_threads() == 1
        assert ext.get_threads() == native_before
    assert torch.get_num_threads() == torch_before and ext.get_threads() == native_before
    with pytest.raises(RuntimeError, match="inside"):
        with native.torch_on_caller():
            raise RuntimeError("inside")
    assert torch.get_num_threads() == torch_before


def prepared(attention_mode):
    model = random_model(SMALL, seed=3)
    return prepare(model, "customcpu", "int", calibrate=lambda m: m(*small_inputs(1)),
                   attention_mode=attention_mode).model


@pytest.mark.skipif(attention.fp32_native_unavailable() is not None,
                    reason=f"native fp32 attention: {attention.fp32_native_unavailable()}")
def test_customcpu_int_with_native_layers_runs_torch_on_the_caller_with_the_same_logits():
    model = prepared("fp32-native")
    assert model.forward_scope is native.torch_on_caller
    ids, types, mask = small_inputs(0)
    with torch.inference_mode():
        scoped = model(ids, types, mask)
        model.set_forward_scope(None)
        plain = model(ids, types, mask)
    assert all(torch.equal(a, b) for a, b in zip(scoped, plain))


def test_a_forward_with_pytorchs_attention_keeps_torchs_threads():
    assert prepared("fp32").forward_scope is None
    assert prepare(random_model(SMALL), "customcpu", "fp").model.forward_scope is None
    assert prepare(random_model(SMALL), "cpu", "int").model.forward_scope is None
