"""What the tests of the native backend share: the customcpu backend, whether its extension is
built here, the ISA paths as pytest parameters that skip where this CPU lacks one, inputs with a
smoothing-like scale, and a small BERT (K = 40 and 72: not multiples of the vector widths) with
its inputs."""
from __future__ import annotations

import pytest
import torch

from bertqa import native
from bertqa.backends import customcpu, load_backend
from bertqa.model.bert import BertConfig

backend = load_backend("customcpu")
built, why_not = backend.available()
needs_native = pytest.mark.skipif(not built, reason=f"customcpu: {why_not}")
FEATURES = native.cpu_features() if built else {}


def isa_param(isa):
    lacks = not FEATURES.get(isa)
    return pytest.param(isa, marks=pytest.mark.skipif(lacks, reason=f"this CPU lacks {isa}"))


ALL_ISAS = [isa_param(isa) for isa in native.ISA_PATHS]


SMALL = BertConfig(vocab_size=120, hidden_size=40, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=72, max_position_embeddings=64)


def small_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, SMALL.vocab_size, (3, 21), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 15:] = 0
    return ids, torch.zeros_like(ids), mask


def make_x_scale(m, k, seed=1, log_sd=2.5):
    """x with rows of very different size (so per-row and per-tensor scales differ a lot), and a
    smoothing-like scale exp(N(0, log_sd)) over decades with one dead channel (x * 0 is +-0)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * 3
    if m > 2:
        x[1] *= 100.0
        x[2] *= 0.001
    scale = torch.exp(torch.randn(k, generator=g) * log_sd)
    if k > 3:
        scale[3] = 0.0
    return x, scale
