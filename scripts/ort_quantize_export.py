"""Quantize an fp32 `bertqa export` with ONNX Runtime's own tools, as peer rows for docs/export.md.

    python scripts/ort_quantize_export.py FP32_EXPORT OUT_DIR --method static|dynamic

static:  onnxruntime.quantization.quantize_static, QDQ format, int8 activations and weights
         (per tensor, MinMax calibration) on the same calibration windows as bertqa's QDQ schemes
         (bertqa.export.calibration: the built-in stories, or --calibrate FILE)
dynamic: onnxruntime.quantization.quantize_dynamic, int8 weights (QInt8), dynamic activations
OUT_DIR is a copy of the export with the quantized model.onnx, loadable with --target onnx
(scheme 'external' in its bertqa-export.json). A measurement script, not part of the package.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--method", choices=("static", "dynamic"), required=True)
    p.add_argument("--calibrate", default=None)
    args = p.parse_args()
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)

    from bertqa.export.calibration import calibration_windows
    from bertqa.export.layout import MANIFEST
    from bertqa.qa.windows import Tokenizer
    manifest = json.loads((args.src / MANIFEST).read_text())
    assert manifest["scheme"] == "fp32", f"{args.src} must be a --scheme fp32 export"
    tmp = Path(tempfile.mkdtemp(prefix=".ortq-", dir=args.out.parent))
    try:
        for f in args.src.iterdir():
            if f.name not in ("model.onnx", "model.onnx.data", MANIFEST):
                shutil.copyfile(f, tmp / f.name)
        src_model, dst_model = str(args.src / "model.onnx"), str(tmp / "model.onnx")
        if args.method == "dynamic":
            quantize_dynamic(src_model, dst_model, weight_type=QuantType.QInt8)
            how = {"tool": "onnxruntime.quantization.quantize_dynamic", "weights": "QInt8"}
        else:
            cal = calibration_windows(Tokenizer(args.src), path=args.calibrate)

            class Reader(CalibrationDataReader):
                def __init__(self):
                    self.items = iter(cal.windows)

                def get_next(self):
                    item = next(self.items, None)
                    if item is None:
                        return None
                    return dict(zip(("input_ids", "token_type_ids", "attention_mask"),
                                    (t.numpy() for t in item)))
            quantize_static(src_model, dst_model, Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
            how = {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                   "activations": "QInt8 per tensor (MinMax)", "weights": "QInt8 per tensor",
                   "calibration": cal.describe()}
        import onnxruntime
        how["onnxruntime"] = onnxruntime.__version__
        manifest.update(scheme="external", precision="int", quantization=how)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if args.out.exists():
            shutil.rmtree(args.out)
        tmp.rename(args.out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
