"""--target onnx: an exported directory run by ONNX Runtime, as a model the QA pipeline calls.

`OnnxModel(dir, provider)` is a callable (input_ids, token_type_ids, attention_mask) -> (start,
end) logits like BertForQA, so QAPipeline, demo, eval, serve and profile run it unchanged.
Providers are ONNX Runtime execution providers: 'CPUExecutionProvider' (the default) or any
installed one, named in full or by its short name ('cpu', 'vitisai'); the CPU provider is
always added after it as the fallback for the nodes it does not take. A provider that is not
installed is refused naming the installed ones.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bertqa.errors import ModelError, NonFiniteActivationError, TargetUnavailable
from bertqa.export import layout

CPU = "CPUExecutionProvider"


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise TargetUnavailable(f"--target onnx needs onnxruntime ({e}): pip install 'bertqa[onnx]'") from None
    return onnxruntime


def read_export_manifest(path: Path) -> dict:
    file = path / layout.MANIFEST
    try:
        m = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"cannot read {file}: {e}") from None
    if not isinstance(m, dict) or m.get("format") != layout.FORMAT:
        raise ModelError(f"{file}: key 'format' must be {layout.FORMAT!r}")
    if m.get("version") != layout.VERSION:
        raise ModelError(f"{file}: key 'version' is {m.get('version')!r}; this bertqa reads "
                         f"version {layout.VERSION} (export the model again)")
    if m.get("scheme") not in layout.SCHEMES + ("external",) or m.get("precision") not in ("fp", "int"):
        raise ModelError(f"{file}: keys 'scheme' and 'precision' must name a scheme and fp/int")
    return m


def resolve_provider(name: str | None, available: list[str]) -> str:
    """The full provider name for 'VitisAIExecutionProvider', 'vitisai', 'cpu', ... or None."""
    if not name:
        return CPU
    for p in available:
        if name.lower() in (p.lower(), p.lower().removesuffix("executionprovider")):
            return p
    raise TargetUnavailable(f"ONNX Runtime execution provider {name!r} is not installed here "
                            f"(installed: {', '.join(available)})")


class OnnxModel:
    """An ONNX Runtime session over DIR/model.onnx with BertForQA's call signature."""

    def __init__(self, path: Path, provider: str | None = None, provider_options: dict | None = None,
                 threads: int | None = None):
        ort = require_onnxruntime()
        from bertqa.model.loading import read_config
        self.path = Path(path)
        self.config = read_config(self.path)           # max_position_embeddings, for the pipeline
        self.provider = resolve_provider(provider, ort.get_available_providers())
        file = self.path / layout.MODEL_FILE
        if not file.is_file():
            raise ModelError(f"{self.path} has no {layout.MODEL_FILE} (export the model again)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        providers = [(self.provider, provider_options or {})] + ([] if self.provider == CPU else [CPU])
        try:
            self.session = ort.InferenceSession(str(file), opts, providers=providers)
        except Exception as e:       # onnxruntime raises its own Fail/InvalidProtobuf/... types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"ONNX Runtime cannot load {file}: {first}") from None
        names = [i.name for i in self.session.get_inputs()]
        if sorted(names) != sorted(("input_ids", "token_type_ids", "attention_mask")):
            raise ModelError(f"{file}: inputs are {names}, expected input_ids, token_type_ids, attention_mask")
        self.active_providers = self.session.get_providers()

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None):
        ids = _int64(input_ids)
        feed = {"input_ids": ids,
                "token_type_ids": np.zeros_like(ids) if token_type_ids is None else _int64(token_type_ids),
                "attention_mask": np.ones_like(ids) if attention_mask is None else _int64(attention_mask)}
        start, end = self.session.run(None, feed)
        if not (np.isfinite(start).all() and np.isfinite(end).all()):
            raise NonFiniteActivationError(f"{self.path / layout.MODEL_FILE} produced NaN/Inf logits")
        return torch.from_numpy(start), torch.from_numpy(end)

    def layer_summary(self) -> dict:
        """{'total': nodes, '<op type>': count, ...} of the exported graph (before ONNX
        Runtime's own fusions), read without its weights."""
        import onnx
        from collections import Counter
        graph = onnx.load(str(self.path / layout.MODEL_FILE), load_external_data=False).graph
        counts = Counter(n.op_type for n in graph.node)
        return {"total": sum(counts.values()), **dict(counts.most_common())}

    def describe(self) -> str:
        import onnxruntime as ort
        return f"ONNX Runtime {ort.__version__} ({', '.join(self.active_providers)})"


def _int64(t) -> np.ndarray:
    a = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    return np.ascontiguousarray(a, dtype=np.int64)


def prepare_exported(path: Path, precision: str | None, provider: str | None,
                     provider_options: dict | None, threads: int | None):
    """(Prepared, manifest) for an exported directory on --target onnx."""
    from bertqa.quant import QuantSpec
    from bertqa.targets import Prepared
    manifest = read_export_manifest(path)
    if precision not in (None, manifest["precision"]):
        raise TargetUnavailable(f"{path} holds an ONNX export of scheme {manifest['scheme']} "
                                f"(--precision {manifest['precision']}), not --precision {precision}")
    model = OnnxModel(path, provider, provider_options, threads)
    label = f"{model.describe()}, scheme {manifest['scheme']}"
    spec = manifest.get("quantization", {}).get("spec") if manifest["scheme"] == "spec" else None
    try:
        spec = QuantSpec(**spec) if spec else None
    except (TypeError, ValueError) as e:
        raise ModelError(f"{path / layout.MANIFEST}: key 'quantization.spec' is not a valid spec ({e})") from None
    prepared = Prepared(model, "onnx", manifest["precision"], label, spec, notes=[],
                        attention=f"in the ONNX graph ({'bf16' if manifest['scheme'] == 'bf16' else 'fp32'}"
                                  f"{', QDQ' if manifest['scheme'].startswith('qdq') else ''})")
    return prepared, manifest


def check_no_torch_options(**options) -> None:
    """--target onnx runs the graph as exported: options that pick torch-side kernels are refused."""
    given = [k for k, v in options.items() if v not in (None, "auto")]
    if given:
        raise TargetUnavailable(f"{', '.join('--' + k.replace('_', '-') for k in given)} "
                                "do not apply to --target onnx (the graph was fixed at export)")



def load_exported(path: Path, target: str | None = None, precision: str | None = None,
                  threads: int | None = None, options=None, provider: str | None = None,
                  provider_options: dict | None = None, **torch_options):
    """bertqa.load for an exported directory: a QAModel whose model is an OnnxModel."""
    from bertqa.api import QAModel, set_threads
    from bertqa.qa.pipeline import QAOptions
    from bertqa.qa.windows import Tokenizer
    if not layout.is_export_dir(path):
        raise TargetUnavailable(f"--target onnx and --onnx-provider run a directory written by "
                                f"`bertqa export` (--model DIR); {path} is not one")
    if target not in (None, "onnx"):
        raise TargetUnavailable(f"{path} is an ONNX export: it runs on --target onnx, not --target {target}")
    check_no_torch_options(**torch_options)
    threads = set_threads(threads)
    prepared, manifest = prepare_exported(path, precision, provider, provider_options, threads)
    return QAModel(prepared, Tokenizer(path), manifest.get("model_name", path.name), path,
                   options or QAOptions(), prepared.model.config.n_parameters, threads,
                   [f"ONNX export ({manifest['scheme']}, opset {manifest.get('opset')}) read from {path}"])
