"""`bertqa bench`: whole-model latency of the engines a user could pick, interleaved in one run.

BERT-large in its exact shapes with random weights (no download), batch 1, at each sequence
length: torch fp32, torch dynamic int8, ONNX Runtime int8 (exported from the same model and
quantized with onnxruntime's quantize_dynamic), customcpu fp, customcpu int, and customcpu int with
PyTorch's host kernels (SDPA attention, add + LayerNorm, GELU: `--attention fp32`). The repeats are
interleaved (one forward of each configuration per round), so that a noisy neighbour slows all
of them alike; every figure is a ratio to baselines measured in the same run. Results are checked
first: each configuration's start logits are compared with torch fp32's before any timing.

Each timed forward starts on a settled machine: `settle_s` (0.1 s) of sleep, untimed, comes before
it. ONNX Runtime's intra-op pool keeps one core spinning for ~50 ms after every run (measured:
50 ms of process CPU in the 100 ms after session.run returned), so without the pause whichever
configuration follows it in the round would share its first ~50 ms with a busy core.

The table gives each configuration's time against ONNX Runtime int8's twice: median to median,
and fastest to fastest ("of mins"). On a shared machine ORT's times swing more than ours (its
median at seq 128 moved between 153 and 239 ms across runs of one afternoon, customcpu int's
between 129 and 165 ms), so the ratio of the minima, each engine on its quietest round, is the
steadier figure of the two; neither is reported without the other.
"""
from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bertqa.model.bert import BertConfig, random_model

CONFIGS = ("torch-fp32", "torch-int8", "onnxruntime-int8", "customcpu-fp", "customcpu-int",
           "customcpu-int-sdpa")


@dataclass
class Timing:
    name: str
    seq: int
    times_ms: list = field(default_factory=list)
    note: str = ""
    logit_err: float = float("nan")     # max |start logits - torch fp32's| on the check input

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms) if self.times_ms else float("nan")


def random_inputs(vocab: int, seq: int, batch: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (batch, seq), generator=g)
    types = torch.zeros_like(ids)
    types[:, seq // 4:] = 1
    return ids, types, torch.ones_like(ids)


def build_torch(config: BertConfig, name: str, spec=None):
    """A callable (ids, types, mask) -> (start, end) for one of the PyTorch-side configurations."""
    from bertqa.quant import QuantSpec
    from bertqa.targets import TARGET_TABLE, prepare_target, target_of_backend
    model = random_model(config)
    if name == "torch-fp32":
        return model, "PyTorch fp32"
    if name == "torch-int8":
        p = prepare_target(model, "cpu", "int")
        return p.model, p.backend
    # '<backend>-<precision>[-sdpa]', for any registered backend, on the target that lists it
    base, sdpa = (name[:-len("-sdpa")], True) if name.endswith("-sdpa") else (name, False)
    backend, _, precision = base.rpartition("-")
    target = target_of_backend(backend)
    calib = [random_inputs(config.vocab_size, 128, seed=s) for s in (11, 12)]

    def calibrate(m):
        for inputs in calib:
            m(*inputs)
    p = prepare_target(model, target, precision, spec or QuantSpec.default(), calibrate,
                       backend=None if TARGET_TABLE[target].backends[0] == backend else backend,
                       attention_mode="fp32" if sdpa else None)
    return p.model, p.backend + (f" [{p.spec.label()}]" if p.spec else "") + f"; attention {p.attention}"


def build_onnxruntime(config: BertConfig, workdir: Path, threads: int):
    """Export the fp32 model to ONNX, quantize_dynamic it to int8, open an ORT session."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    model = random_model(config)
    ids, types, mask = random_inputs(config.vocab_size, 16)
    fp32_path, int8_path = workdir / "bert.onnx", workdir / "bert-int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (ids, types, mask), str(fp32_path), dynamo=False, opset_version=17,
                          input_names=["input_ids", "token_type_ids", "attention_mask"],
                          output_names=["start_logits", "end_logits"],
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in
                                        ("input_ids", "token_type_ids", "attention_mask",
                                         "start_logits", "end_logits")})
    del model
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    fp32_path.unlink()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(int8_path), opts, providers=["CPUExecutionProvider"])

    def run(ids, types, mask):
        out = session.run(None, {"input_ids": ids.numpy(), "token_type_ids": types.numpy(),
                                 "attention_mask": mask.numpy()})
        return torch.from_numpy(out[0]), torch.from_numpy(out[1])
    return run, f"ONNX Runtime {ort.__version__} int8 (quantize_dynamic, QInt8 weights)"


SETTLE_S = 0.1


def run_model_bench(config: BertConfig | None = None, seqs=(384, 128), repeats: int = 5,
                    configs=CONFIGS, threads: int | None = None, log=print,
                    settle_s: float = SETTLE_S) -> list[Timing]:
    config = config or BertConfig.bert_large()
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    runners, labels = {}, {}
    with tempfile.TemporaryDirectory(prefix="bertqa-bench-") as tmp, torch.inference_mode():
        for name in configs:
            t0 = time.perf_counter()
            try:
                if name == "onnxruntime-int8":
                    runners[name], labels[name] = build_onnxruntime(config, Path(tmp), threads)
                else:
                    runners[name], labels[name] = build_torch(config, name)
            except ImportError as e:
                log(f"  {name}: skipped ({e}; install the bench extra: pip install -e '.[bench]')")
                continue
            log(f"  prepared {name} in {time.perf_counter() - t0:.1f} s: {labels[name]}")
        results = []
        for seq in seqs:
            inputs = random_inputs(config.vocab_size, seq, seed=seq)
            timings = {n: Timing(n, seq, note=labels[n]) for n in runners}
            ref_start = runners["torch-fp32"](*inputs)[0] if "torch-fp32" in runners else None
            for name, run in runners.items():                       # check first, and warm up
                start = run(*inputs)[0]
                if ref_start is not None:
                    timings[name].logit_err = float((start - ref_start).abs().max())
            for _ in range(repeats):                                # interleaved rounds
                for name, run in runners.items():
                    time.sleep(settle_s)                            # see the module docstring
                    t0 = time.perf_counter()
                    run(*inputs)
                    timings[name].times_ms.append((time.perf_counter() - t0) * 1e3)
            results += timings.values()
    return results


def format_model_table(results: list[Timing], config_label: str, threads: int,
                       settle_s: float = SETTLE_S) -> str:
    lines = [f"BERT QA forward, {config_label}, batch 1, {threads} threads, "
             f"{len(results[0].times_ms) if results else 0} interleaved repeats, "
             f"{settle_s:g} s pause before each"]
    for seq in sorted({r.seq for r in results}, reverse=True):
        rows = [r for r in results if r.seq == seq]
        by_name = {r.name: r for r in rows}
        fp32 = by_name["torch-fp32"].median if "torch-fp32" in by_name else None
        ort = by_name.get("onnxruntime-int8")
        ort_int8, ort_min = (ort.median, min(ort.times_ms)) if ort and ort.times_ms else (None, None)
        lines.append(f"\nseq {seq}")
        lines.append(f"  {'configuration':18} {'median ms':>10} {'min':>9} {'max':>9} "
                     f"{'x fp32':>7} {'x ORT int8':>10} {'(of mins)':>9} {'max|dlogit|':>11}")
        for r in rows:
            vs_fp32 = f"{r.median / fp32:.2f}" if fp32 else "-"
            vs_ort = f"{r.median / ort_int8:.2f}" if ort_int8 else "-"
            vs_ort_min = f"{min(r.times_ms) / ort_min:.2f}" if ort_min else "-"
            lines.append(f"  {r.name:18} {r.median:10.1f} {min(r.times_ms):9.1f} {max(r.times_ms):9.1f} "
                         f"{vs_fp32:>7} {vs_ort:>10} {vs_ort_min:>9} {r.logit_err:11.3g}")
    lines.append("\nconfigurations:")
    seen = set()
    for r in results:
        if r.name not in seen:
            seen.add(r.name)
            lines.append(f"  {r.name}: {r.note}")
    return "\n".join(lines)
