"""The forward profiler on a tiny random BERT: hooks only while profiling, times add up, parts shown."""
import pytest
import torch

from bertqa.backends.cpu_reference import ReferenceBackend
from bertqa.model.bert import BertConfig, random_model
from bertqa.bench.profile import ForwardProfiler, PeakSampler, format_profile, layer_type
from bertqa.backends import get_backend
from bertqa.quant import QuantSpec, quantize_model

TINY = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=64)


class PartsBackend(ReferenceBackend):
    """The reference, reporting made-up parts the way a native backend would."""
    name = "parts"

    def run(self, handle, x, stats):
        stats.parts["gemm"] = stats.parts.get("gemm", 0.0) + 0.002
        stats.parts["quantize"] = stats.parts.get("quantize", 0.0) + 0.001
        return super().run(handle, x, stats)


def forward(model, n=3):
    ids = torch.randint(1, 100, (2, 12))
    with torch.inference_mode():
        for _ in range(n):
            model(ids, torch.zeros_like(ids), torch.ones_like(ids))


def test_layer_type():
    assert layer_type("layers.3.attention.qkv") == "attention.qkv"
    assert layer_type("encoder.layer.11.output.dense") == "output.dense"
    assert layer_type("qa_outputs") == "qa_outputs"


def test_plain_model_times_add_up_and_hooks_go_away():
    model = random_model(TINY)
    with ForwardProfiler(model) as prof:
        forward(model)
    s = prof.summary()
    assert s["forwards"] == 3
    assert set(s["linear"]) == {"attention.qkv", "attention.out", "ffn.up", "ffn.down", "qa_outputs"}
    assert s["linear"]["ffn.up"]["calls"] == 3 * TINY.num_hidden_layers
    assert s["linear"]["ffn.up"]["backend"] is None
    assert s["linear_total"] > 0 and s["attention"] > 0 and s["forward"] > s["linear_total"]
    host = sum(r["seconds"] for r in s["host"].values())
    modules = sum(r["seconds"] for r in s["modules"].values())
    assert s["linear_total"] + s["attention"] + host + modules + s["rest"] == pytest.approx(s["forward"])
    assert set(s["host"]) == {"core", "add_norm"}
    assert s["host"]["core"]["calls"] == 3 * TINY.num_hidden_layers * 2     # per sequence (bert.per_sequence)
    assert s["host"]["add_norm"]["calls"] == 6 * TINY.num_hidden_layers        # attention and ffn
    assert s["host"]["core"]["kernels"] == {"sdpa_attention"} and s["host"]["core"]["seconds"] > 0
    assert set(s["modules"]) == {"embeddings", "ffn.act (GELU)"}
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert "core" not in vars(model.layers[0].attention) or \
        model.layers[0].attention.core.__name__ == "sdpa_attention"             # unwrapped again


def test_profile_warms_up_and_names_the_kernels_that_run():
    from bertqa.api import from_module
    from bertqa.model.loading import BUNDLED_DIR
    from bertqa.bench.profile import profile_questions
    from bertqa.qa.pipeline import QAOptions
    from bertqa.qa.windows import WindowOptions
    config = BertConfig(**{**TINY.__dict__, "vocab_size": 30522})
    options = QAOptions(windows=WindowOptions(max_seq_len=64, doc_stride=16, max_question_len=16))
    qa = from_module(random_model(config), BUNDLED_DIR, "tiny", "customcpu", "int", options=options)
    calls = []
    real = qa.answer
    qa.answer = lambda *a, **k: calls.append(a[0]) or real(*a, **k)
    pairs = [(f"Who kept lighthouse {i}?", "Ada kept the lighthouse.") for i in range(4)]
    s = profile_questions(qa, pairs, warmup=3)
    assert calls[:3] == [q for q, _ in pairs[:3]] and len(calls) == 3 + 4 and s["forwards"] == 4
    text = format_profile(s)
    attention, _, norm = qa.header()["attention"].partition(", ")
    assert f"attention softmax(QK^T/sqrt(d)) V: {attention}"[:64] in text
    assert f"residual add + LayerNorm: {norm or 'PyTorch add'}"[:40] in text
    assert "GELU: fused into Linear ffn.up" in text and "ffn.act" not in text
    peak = s["peak"]                       # the int8 peak loop after each profiled question
    if peak is not None:                   # (None where the CPU has no path with a peak loop)
        assert peak["samples"] == len(pairs) and peak["low"] <= peak["gops"] <= peak["high"]
        assert f"sampled after each of the {len(pairs)} questions" in text


def test_peak_sampler_weights_each_sample_by_its_questions_work():
    """The peak compared with is the rate of the questions' GEMM work at the sampled peaks:
    total multiply-adds over the sum of each question's multiply-adds at its own sample."""
    sampler = PeakSampler(torch.nn.Linear(2, 2), threads=1, enabled=False)
    assert sampler.summary() is None                   # nothing sampled: no peak line
    sampler.samples = [(100, 200.0), (300, 100.0), (0, 50.0)]
    peak = sampler.summary()
    assert peak["gops"] == pytest.approx(400 / (100 / 200 + 300 / 100))
    assert (peak["low"], peak["high"], peak["samples"]) == (50.0, 200.0, 3)


def test_peak_sampler_samples_only_where_a_backend_reports_its_gemm():
    """No time is spent on the peak loop for backends whose GEMM time is not reported."""
    model = random_model(TINY)
    nodes = quantize_model(model, "int", get_backend("cpu-reference"), QuantSpec())
    sampler = PeakSampler(model, threads=1)
    forward(model, n=1)
    sampler.sample(123)
    assert sampler.samples == [] and sampler.seconds == 0.0
    if sampler.isa is not None:                    # a CPU with a peak loop: now a gemm part
        nodes[0].stats.parts["gemm"] = 0.001
        sampler.sample(123)
        assert len(sampler.samples) == 1 and sampler.samples[0][0] == 123 and sampler.seconds > 0


def test_custom_nodes_show_backend_time_and_parts():
    model = random_model(TINY)
    nodes = quantize_model(model, "int", get_backend("cpu-reference"), QuantSpec())
    for node in nodes:
        node.set_backend(PartsBackend())
    forward(model, n=1)                               # stats from before profiling are dropped
    with ForwardProfiler(model) as prof:
        forward(model, n=2)
    s = {**prof.summary(), "total": 1.0, "questions": 2}
    qkv = s["linear"]["attention.qkv"]
    assert 0 < qkv["backend"] <= qkv["seconds"]
    assert qkv["parts"]["gemm"] == pytest.approx(2 * TINY.num_hidden_layers * 0.002)
    text = format_profile(s)
    assert "in the backend" in text and "gemm" in text and "quantize" in text


def test_graph_replayed_model_is_profiled_eagerly_and_restored():
    """A CUDA-graph wrapper runs no module code to hook: the profile runs its eager model."""
    from bertqa.api import from_module
    from bertqa.backends.cuda_graphs import GraphedModel
    from bertqa.model.loading import BUNDLED_DIR
    from bertqa.bench.profile import profile_questions
    from bertqa.qa.pipeline import QAOptions
    from bertqa.qa.windows import WindowOptions
    config = BertConfig(**{**TINY.__dict__, "vocab_size": 30522})
    # windows no longer than the tiny model's 64 positions (a longer max_seq_len is refused)
    options = QAOptions(windows=WindowOptions(max_seq_len=64, doc_stride=16, max_question_len=16))
    qa = from_module(random_model(config), BUNDLED_DIR, "tiny", options=options)
    graphed = GraphedModel(qa.pipeline.model)            # on CPU inputs it runs eagerly anyway
    qa.pipeline.model = graphed
    pairs = [("Who kept the lighthouse?", "Ada kept the lighthouse for forty years.")] * 2
    s = profile_questions(qa, pairs)
    assert qa.pipeline.model is graphed
    assert s["forwards"] == 2 and s["linear"]["ffn.up"]["calls"] == 2 * config.num_hidden_layers
    assert any("CUDA graphs off" in n for n in s["notes"])
    assert "note: CUDA graphs off" in format_profile(s)


def test_first_layer_note_only_where_layer_0_stands_out_with_threads():
    from types import SimpleNamespace
    from bertqa.bench.profile import first_layer_note
    names = [f"layers.{i}.ffn.up" for i in range(4)]
    slow = SimpleNamespace(linears=names, seconds=dict(zip(names, [0.08, 0.01, 0.01, 0.012])))
    assert "7.3x the median layer's" in first_layer_note(slow, threads=2)
    assert first_layer_note(slow, threads=1) is None
    even = SimpleNamespace(linears=names, seconds=dict(zip(names, [0.012, 0.01, 0.01, 0.012])))
    assert first_layer_note(even, threads=2) is None


def test_profiler_counts_each_linear_layers_multiply_adds():
    """M * K * N per call, M all rows of the input: what the GOPS and %-of-peak lines divide."""
    import torch
    from torch import nn

    from bertqa.bench.profile import ForwardProfiler

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.act, self.down = nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)

        def forward(self, x):
            return self.down(self.act(self.up(x)))
    model = Two()
    with ForwardProfiler(model) as prof:
        model(torch.randn(2, 5, 4))
        model(torch.randn(1, 7, 4))
    rows = prof.summary()["linear"]
    assert rows["up"]["macs"] == (10 + 7) * 4 * 3 and rows["down"]["macs"] == (10 + 7) * 3 * 2
