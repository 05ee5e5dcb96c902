"""Quantize an fp32 `bertqa export` with AMD Quark (a peer row for docs/export.md).

Quark pins its own onnx/onnxruntime, so it lives in a separate environment and this script
imports nothing from bertqa; the calibration windows come as an .npz written by bertqa:

    python -c "from bertqa.export.calibration import save_windows; save_windows('EXPORT', 'cal.npz')"
    /tmp/quarkenv/bin/python scripts/quark_quantize_export.py EXPORT OUT --config XINT8 --windows cal.npz

OUT is a copy of EXPORT with Quark's model.onnx, loadable with --target onnx (scheme 'external').
A measurement script, not part of the package.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

MANIFEST = "bertqa-export.json"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--config", required=True, help="a Quark default config name: XINT8, A8W8, A16W8, ...")
    p.add_argument("--windows", type=Path, required=True)
    args = p.parse_args()
    import quark
    from onnxruntime.quantization import CalibrationDataReader
    from quark.onnx import ModelQuantizer
    from quark.onnx.quantization.config import Config, get_default_config

    data = np.load(args.windows)
    n = len([k for k in data.files if k.startswith("input_ids_")])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= n:
                return None
            item = {k: data[f"{k}_{self.i}"] for k in ("input_ids", "token_type_ids", "attention_mask")}
            self.i += 1
            return item

        def rewind(self):
            self.i = 0

    tmp = args.out.parent / f".{args.out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in args.src.iterdir():
        if f.name not in ("model.onnx", "model.onnx.data", MANIFEST):
            shutil.copyfile(f, tmp / f.name)
    quantizer = ModelQuantizer(Config(global_quant_config=get_default_config(args.config)))
    quantizer.quantize_model(str(args.src / "model.onnx"), str(tmp / "model.onnx"), Reader())
    manifest = json.loads((args.src / MANIFEST).read_text())
    manifest.update(scheme="external", precision="int",
                    quantization={"tool": f"AMD Quark {getattr(quark, '__version__', '?')} (quark.onnx)",
                                  "config": args.config, "calibration_windows": n})
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.rename(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
