"""What an exported directory holds (no heavy imports: bertqa.model.loading reads these names).

    DIR/model.onnx           the graph (opset 17; 21 for qdq-a16w8) and its small constants
    DIR/model.onnx.data      every larger initializer (ONNX external data, 64-byte aligned)
    DIR/bertqa-export.json   {"format": "bertqa-export", "version": 1, "scheme", "opset",
                              "precision", "model_name", "inputs", "outputs", "quantization",
                              "calibration", "layers" (spec: per-layer shift)}
    DIR/config.json, tokenizer files   copied from the source model: DIR stands alone

The JSON is written last, into a temporary directory that is renamed to DIR only when complete.
"""
from pathlib import Path

FORMAT, VERSION = "bertqa-export", 1
MANIFEST = "bertqa-export.json"
MODEL_FILE = "model.onnx"
SCHEMES = ("fp32", "bf16", "spec", "qdq-a8w8", "qdq-xint8", "qdq-a16w8")
FORMATS = ("onnx",)


def is_export_dir(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()
