"""`bertqa export` / `QAModel.export`: a loaded model written as a self-contained ONNX directory.

The source is the model a QAModel holds: for scheme spec its int8 custom nodes (weights, scales,
calibrated shifts, smoothing exactly as customcpu runs them), for the float and QDQ schemes the
fp32 BertForQA (the QAModel's own for --target cpu --precision fp, else read again from its
checkpoint). Everything is written into a temporary directory next to the destination, which
replaces the destination only once model.onnx, its data, the tokenizer and the JSON are all
there (layout.py); on any error the temporary directory is removed and the destination is as
it was.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from bertqa.errors import BertQAError
from bertqa.export import layout
from bertqa.memory import release_free_heap

COPIED = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def require_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError as e:
        raise BertQAError(f"bertqa export needs onnx ({e}): pip install 'bertqa[onnx]'") from None


def check_destination(out: str | Path) -> Path:
    """out as a path that an export may (re)place: absent (its missing parents are made when
    writing), an empty directory or an earlier export; BertQAError for a file or another
    non-empty directory."""
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise BertQAError(f"{out} exists and is not a directory: name a directory to export into")
    if out.is_dir() and any(out.iterdir()) and not (out / layout.MANIFEST).is_file():
        raise BertQAError(f"{out} is a non-empty directory that is not a bertqa export: "
                          "name a new or empty directory")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise BertQAError(f"cannot export to {out}: {parent} is not a directory")
    return out


def make_scheme(scheme: str, model, tokenizer, options, calibrate: str | None, qdq_weights: str | None):
    """(scheme object, calibration record or None) for `scheme` on the source `model`."""
    from bertqa.export.float_schemes import Bf16Scheme, Fp32Scheme
    from bertqa.export.spec_scheme import SpecScheme
    if scheme not in layout.SCHEMES:
        raise BertQAError(f"unknown export scheme {scheme!r}; choose one of {', '.join(layout.SCHEMES)}")
    if not scheme.startswith("qdq-") and (calibrate or qdq_weights):
        raise BertQAError(f"--calibrate and --qdq-weights apply to the qdq schemes, not {scheme} "
                          "(spec uses the shifts and smoothing its model was prepared with)")
    if scheme == "fp32":
        return Fp32Scheme(), None
    if scheme == "bf16":
        return Bf16Scheme(), None
    if scheme == "spec":
        return SpecScheme(), None
    from bertqa.export.calibration import activation_amax, calibration_windows
    from bertqa.export.qdq import KINDS, QdqScheme
    if qdq_weights not in (None, "tensor", "channel"):
        raise BertQAError(f"--qdq-weights must be tensor or channel, got {qdq_weights!r}")
    if scheme == "qdq-xint8" and qdq_weights == "channel":
        raise BertQAError("qdq-xint8 quantizes weights per tensor (power-of-two scales): "
                          "--qdq-weights channel applies to qdq-a8w8 and qdq-a16w8")
    calibration = calibration_windows(tokenizer, options, calibrate)
    return QdqScheme(scheme, activation_amax(model, calibration), qdq_weights or KINDS[scheme][4]), calibration


def export_model(model, scheme: str, out_dir: str | Path, model_dir: Path, model_name: str,
                 tokenizer, options=None, calibrate: str | None = None,
                 qdq_weights: str | None = None) -> Path:
    """Write `model` (a BertForQA: fp32, or with int8 nodes for spec) as an ONNX export."""
    out = check_destination(out_dir)
    sch, calibration = make_scheme(scheme, model, tokenizer, options, calibrate, qdq_weights)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        tmp.chmod(0o755)                            # mkdtemp makes it private
    except OSError as e:
        raise BertQAError(f"cannot write into {out.parent}: {e.strerror or e}") from None
    try:
        _write(model, sch, calibration, tmp, model_dir, model_name)
        _replace(tmp, out)
    except OSError as e:
        raise BertQAError(f"cannot write the export to {out}: {e.strerror or e}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        release_free_heap()
    return out


def _write(model, sch, calibration, tmp: Path, model_dir: Path, model_name: str) -> None:
    from bertqa.export.bert_graph import INPUT_NAMES, OUTPUT_NAMES, build_bert
    from bertqa.export.graph import GraphWriter
    opset = getattr(sch, "opset", 17)
    g = GraphWriter(tmp, opset)
    try:
        inputs, outputs = build_bert(g, model, sch)
        g.save(inputs, outputs, f"bertqa export of {model_name}, scheme {sch.name}")
    finally:
        g.close()
    for name in COPIED:
        if (Path(model_dir) / name).is_file():
            shutil.copyfile(Path(model_dir) / name, tmp / name)
    manifest = {"format": layout.FORMAT, "version": layout.VERSION, "scheme": sch.name,
                "opset": opset, "precision": sch.precision, "model_name": model_name,
                "inputs": list(INPUT_NAMES), "outputs": list(OUTPUT_NAMES),
                "quantization": sch.describe(),
                "calibration": calibration.describe() if calibration else None}
    spec = getattr(sch, "layers", None)
    if spec:
        first = next(m for m in model.modules() if getattr(m, "lw", None) is not None)
        manifest["quantization"]["spec"] = first.lw.spec.to_dict()
        manifest["calibration"] = {"source": "the prepared model's (int16 shifts and smoothing "
                                             "calibrated when it was prepared)"}
        manifest["layers"] = spec
    if getattr(sch, "scales", None):
        manifest["activation_scales"] = sch.scales
    (tmp / layout.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def _replace(tmp: Path, out: Path) -> None:
    """Put tmp at out: a rename, after moving an earlier export (or empty directory) aside."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_qamodel(qa, out_dir: str | Path, scheme: str = "spec", calibrate: str | None = None,
                   qdq_weights: str | None = None) -> Path:
    """QAModel.export: pick the source model for `scheme` (see the module docstring)."""
    from bertqa.model.loading import load_model
    from bertqa.quant import custom_nodes
    from bertqa.saved import is_prepared_dir
    require_onnx()
    check_destination(out_dir)
    if scheme not in layout.SCHEMES:
        raise BertQAError(f"unknown export scheme {scheme!r}; choose one of {', '.join(layout.SCHEMES)}")
    p = qa.prepared
    if scheme == "spec":
        if p.precision != "int" or not custom_nodes(p.model):
            raise BertQAError(f"scheme spec exports an int8 model on a custom target; this one is "
                              f"--target {p.target} --precision {p.precision} "
                              "(load it with --target customcpu --precision int)")
        model = p.model
    elif p.target == "cpu" and p.precision == "fp":
        model = p.model
    elif is_prepared_dir(Path(qa.model_dir)) or getattr(qa, "exported", False):
        raise BertQAError(f"scheme {scheme} starts from the fp32 checkpoint, and {qa.model_dir} "
                          "holds none (a prepared int8 model exports with --scheme spec)")
    else:
        model = load_model(Path(qa.model_dir))
    return export_model(model, scheme, out_dir, Path(qa.model_dir), qa.model_name, qa.tokenizer,
                        qa.options, calibrate, qdq_weights)
