"""The engines `bertqa bench` compares: how each is built from the same random BERT, once.

Every builder takes a `Build` (config, seed, threads, cache directory, calibration windows) and
returns (run, label): run(ids, types, mask) -> (start, end) logits as torch tensors, label what
a reader needs to reproduce it (library, version, precision, options). All engines start from
`fp32_model` (random weights, or a checkpoint's), so they compute the same function; the peers that need a file
(ONNX Runtime, OpenVINO) export it once into the cache (`cached_dir`), keyed by config, seed,
engine stage and library versions, so a rerun reads it back instead of exporting again.

Builders import their library inside, so a missing one costs only its own engine: `missing()`
names what `pip install 'bertqa[bench]'` would add.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from bertqa.model.bert import BertConfig, random_model

INPUT_NAMES = ["input_ids", "token_type_ids", "attention_mask"]
OPSET = 17


@dataclass
class Build:
    config: BertConfig
    seed: int
    threads: int
    cache_dir: Path
    calib: list           # [(ids, types, mask)]: calibration windows for static int8 (NNCF, customcpu)
    log: Callable[[str], None] = print
    model_dir: str | None = None    # real weights from this checkpoint directory instead of random
    # backends registered at run time in the parent (name -> "module:Class" or the class), so
    # that a worker registers them too (bertqa.backends.register)
    registered: dict = field(default_factory=dict)

    def __getstate__(self):
        """Sent to workers without `log`: each worker sets its own (a test's patched print,
        for one, does not pickle)."""
        return {**self.__dict__, "log": None}


def fp32_model(b: Build):
    """The model every engine starts from: the checkpoint in b.model_dir, else random weights."""
    if b.model_dir:
        from bertqa.model.loading import load_model
        return load_model(Path(b.model_dir))
    return random_model(b.config, b.seed)


@dataclass(frozen=True)
class Engine:
    build: Callable       # Build -> (run, label)
    needs: tuple = ()     # importable modules it needs beyond torch
    fp: bool = False      # computes in floating point: held to the tighter logit tolerance
    mixed_only: bool = False   # timed on the mixed-length case only (bertqa.bench.mixed)


def missing(engine: Engine) -> list[str]:
    return [m for m in engine.needs if importlib.util.find_spec(m) is None]


# -- cache --------------------------------------------------------------------------------------

def _versions(modules) -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {"torch": torch.__version__}
    for m in modules:
        try:
            out[m] = version(m)
        except PackageNotFoundError:
            out[m] = "?"
    return out


def cache_key(b: Build, stage: str, modules=(), extra: dict | None = None) -> str:
    """Hash of what the stage's files depend on: config, seed, the model code, library versions."""
    model_src = Path(__file__).resolve().parents[1] / "model" / "bert.py"
    weights = ([(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in
                sorted(Path(b.model_dir).resolve().iterdir()) if f.is_file()] if b.model_dir else None)
    what = dict(stage=stage, config=dataclasses.asdict(b.config), seed=b.seed, opset=OPSET,
                weights=weights,
                model=hashlib.sha256(model_src.read_bytes()).hexdigest()[:16],
                versions=_versions(modules), **(extra or {}))
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def cached_dir(b: Build, stage: str, make: Callable[[Path], None], modules=(),
               extra: dict | None = None) -> Path:
    """The stage's directory in the cache, made by make(tmp_dir) only when it is not there yet
    (written under a temporary name and renamed, so an interrupted export is never read back)."""
    final = b.cache_dir / f"{stage}-{cache_key(b, stage, modules, extra)}"
    if final.is_dir():
        b.log(f"    {stage}: cached {final}")
        return final
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    make(tmp)
    tmp.rename(final)
    b.log(f"    {stage}: exported in {time.perf_counter() - t0:.1f} s to {final}")
    return final


# -- PyTorch and customcpu ------------------------------------------------------------------------

def _torch_side(name: str):
    def build(b: Build):
        from bertqa.bench.model_bench import build_torch
        return build_torch(b.config, name, seed=b.seed, calib=b.calib[:2], model=fp32_model(b))
    return build


# -- ONNX Runtime ---------------------------------------------------------------------------------

def onnx_fp32(b: Build) -> Path:
    """The fp32 model exported to ONNX (dynamic batch and sequence), from the cache."""
    def make(d: Path):
        model = fp32_model(b)
        ids, types, mask = b.calib[0]
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (ids, types, mask), str(d / "model.onnx"), dynamo=False,
                              opset_version=OPSET, input_names=INPUT_NAMES,
                              output_names=["start_logits", "end_logits"],
                              dynamic_axes={n: {0: "batch", 1: "seq"} for n in
                                            INPUT_NAMES + ["start_logits", "end_logits"]})
    return cached_dir(b, "onnx-fp32", make, ("onnx",)) / "model.onnx"


def _ort_session(path: Path, threads: int):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(ids, types, mask):
        out = session.run(None, {"input_ids": ids.numpy(), "token_type_ids": types.numpy(),
                                 "attention_mask": mask.numpy()})
        return torch.from_numpy(out[0]), torch.from_numpy(out[1])
    return run


def build_ort_int8(b: Build):
    """quantize_dynamic (QInt8 weights, per-row dynamic uint8 activations) on the plain export."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    src = onnx_fp32(b)
    d = cached_dir(b, "ort-int8", lambda d: quantize_dynamic(str(src), str(d / "model.onnx"),
                                                             weight_type=QuantType.QInt8),
                   ("onnx", "onnxruntime"))
    return (_ort_session(d / "model.onnx", b.threads),
            f"ONNX Runtime {ort.__version__} int8 (quantize_dynamic, QInt8 weights), plain graph")


def build_ort_int8_optimized(b: Build):
    """onnxruntime.transformers.optimizer (model_type bert) first, then quantize_dynamic."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer
    src = onnx_fp32(b)
    c = b.config

    def make(d: Path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = optimizer.optimize_model(str(src), model_type="bert", num_heads=c.num_attention_heads,
                                           hidden_size=c.hidden_size)
        fused = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
        (d / "fusions.json").write_text(json.dumps(fused))
        opt.save_model_to_file(str(d / "fp32.onnx"))
        # the fused com.microsoft nodes defeat the quantizer's shape inference: their outputs
        # are float, which DefaultTensorType tells it
        quantize_dynamic(str(d / "fp32.onnx"), str(d / "model.onnx"), weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        (d / "fp32.onnx").unlink()
    d = cached_dir(b, "ort-opt-int8", make, ("onnx", "onnxruntime"))
    fused = json.loads((d / "fusions.json").read_text())
    return (_ort_session(d / "model.onnx", b.threads),
            f"ONNX Runtime {ort.__version__} int8 (quantize_dynamic) on the transformers-optimized "
            f"graph (optimizer model_type bert; fused: "
            + (", ".join(f"{k} {v}" for k, v in sorted(fused.items())) or "nothing") + ")")


# -- OpenVINO -------------------------------------------------------------------------------------

def _ov_compiled(xml: Path, threads: int):
    import openvino as ov
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(xml)), "CPU",
                                  {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()

    def run(ids, types, mask):
        out = request.infer([ids.numpy(), types.numpy(), mask.numpy()], share_inputs=True)
        return torch.from_numpy(out[0].copy()), torch.from_numpy(out[1].copy())
    precision = compiled.get_property("INFERENCE_PRECISION_HINT")
    return run, getattr(precision, "get_type_name", lambda: str(precision))()


def ov_fp(b: Build) -> Path:
    """ov.convert_model of the ONNX export, saved as IR with fp32 weights (no fp16 compression)."""
    def make(d: Path):
        import openvino as ov
        ov.save_model(ov.convert_model(str(onnx_fp32(b))), str(d / "model.xml"), compress_to_fp16=False)
    return cached_dir(b, "ov-fp", make, ("onnx", "openvino")) / "model.xml"


def build_ov_fp(b: Build):
    import openvino as ov
    run, precision = _ov_compiled(ov_fp(b), b.threads)
    return run, (f"OpenVINO {ov.get_version().split('-')[0]} default precision (inference precision "
                 f"{precision}), CPU, INFERENCE_NUM_THREADS {b.threads}, PERFORMANCE_HINT LATENCY")


def build_ov_int8(b: Build):
    """nncf.quantize (ModelType.TRANSFORMER: static per-tensor activation scales) on the IR."""
    import nncf
    import openvino as ov
    subset = len(b.calib)

    def make(d: Path):
        src = ov_fp(b)
        data = nncf.Dataset([dict(zip(INPUT_NAMES, (t.numpy() for t in w))) for w in b.calib])
        q = nncf.quantize(ov.Core().read_model(str(src)), data, model_type=nncf.ModelType.TRANSFORMER,
                          subset_size=subset)
        ov.save_model(q, str(d / "model.xml"), compress_to_fp16=False)
    xml = cached_dir(b, "ov-int8", make, ("onnx", "openvino", "nncf"),
                     dict(calib=subset, calib_shape=list(b.calib[0][0].shape))) / "model.xml"
    run, precision = _ov_compiled(xml, b.threads)
    return run, (f"OpenVINO {ov.get_version().split('-')[0]} int8 (nncf {nncf.__version__} quantize, "
                 f"ModelType.TRANSFORMER, {subset} calibration windows), CPU, inference precision "
                 f"{precision}, INFERENCE_NUM_THREADS {b.threads}, PERFORMANCE_HINT LATENCY")


# -- torchao / pt2e -------------------------------------------------------------------------------

def build_torchao_int8(b: Build):
    """pt2e with X86InductorQuantizer (dynamic int8 activations, per-channel int8 weights), then
    torch.compile with inductor freezing, specialized to each shape (compiled at its first use,
    in the untimed check): needs a C++ compiler."""
    import torchao
    import torch._inductor.config as inductor_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    from bertqa.bench.model_bench import random_inputs
    model = fp32_model(b)
    ids, types, mask = random_inputs(b.config.vocab_size, 32, batch=2)   # not 1: it would specialize
    batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("seq", min=8, max=512)
    shapes = tuple({0: batch, 1: seq} for _ in range(3))
    with torch.no_grad():
        exported = torch.export.export(model, (ids, types, mask), dynamic_shapes=shapes).module()
        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(is_dynamic=True))
        prepared = prepare_pt2e(exported, quantizer)
        for window in b.calib[:2]:
            prepared(*window)
        converted = convert_pt2e(prepared)
    inductor_config.freezing = True
    # compiled kernels beside the exports, so that a rerun does not compile again
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(b.cache_dir / "inductor"))
    compiled = torch.compile(converted, dynamic=False)    # kernels specialized to each shape

    def run(ids, types, mask):
        with torch.no_grad():
            return compiled(ids, types, mask)
    return run, (f"torchao {torchao.__version__} pt2e X86InductorQuantizer int8 (dynamic activations), "
                 f"torch.compile inductor (freezing, one compile per shape)")


ENGINES = {
    "torch-fp32": Engine(_torch_side("torch-fp32"), fp=True),
    "torch-int8": Engine(_torch_side("torch-int8")),
    "customcpu-fp": Engine(_torch_side("customcpu-fp"), fp=True),
    "customcpu-int": Engine(_torch_side("customcpu-int")),
    "customcpu-int-sdpa": Engine(_torch_side("customcpu-int-sdpa")),
    "customcpu-int-padded": Engine(_torch_side("customcpu-int-padded"), mixed_only=True),
    "onnxruntime-int8": Engine(build_ort_int8, ("onnx", "onnxruntime")),
    "onnxruntime-int8-opt": Engine(build_ort_int8_optimized, ("onnx", "onnxruntime")),
    "openvino-fp": Engine(build_ov_fp, ("onnx", "openvino"), fp=True),
    "openvino-int8": Engine(build_ov_int8, ("onnx", "openvino", "nncf")),
    "torchao-int8": Engine(build_torchao_int8, ("torchao",)),
}


def engine(name: str) -> Engine | None:
    """The engine called `name`: one of ENGINES, or BACKEND-fp / BACKEND-int[-sdpa] for any
    registered Linear backend (the customcpu rows are that rule too); None if neither."""
    if name in ENGINES:
        return ENGINES[name]
    from bertqa.backends import backend_names
    base = name[:-len("-sdpa")] if name.endswith("-sdpa") else name
    backend, _, precision = base.rpartition("-")
    if backend in backend_names() and precision in ("fp", "int") and not (precision == "fp" and base != name):
        return Engine(_torch_side(name), fp=precision == "fp")
    return None


def runtime_registrations() -> dict:
    """The backends registered at run time (not in bertqa.backends' own table)."""
    from bertqa.backends import BUILT_IN, REGISTRY
    return {k: v for k, v in REGISTRY.items() if k not in BUILT_IN}
