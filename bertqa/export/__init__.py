"""Export to ONNX (bertqa export, QAModel.export) and running an export (--target onnx).

    layout.py         what an exported directory holds (names only, no heavy imports)
    graph.py          GraphWriter: nodes and initializers streamed to model.onnx.data
    bert_graph.py     BertForQA as ONNX operators; each Linear written by a scheme
    float_schemes.py  fp32, bf16
    spec_scheme.py    spec: docs/quantization.md steps 2-5 in MatMulInteger and integer operators
    qdq.py            qdq-a8w8, qdq-xint8, qdq-a16w8: static QDQ
    calibration.py    per-tensor activation statistics for the QDQ schemes
    writer.py         the directory, written atomically
    runtime.py        an exported directory as a model callable on ONNX Runtime

onnx and onnxruntime come with the `onnx` extra (pip install 'bertqa[onnx]').
"""
from bertqa.export.layout import FORMATS, SCHEMES  # noqa: F401


def export_qamodel(*args, **kwargs):
    from bertqa.export.writer import export_qamodel as run
    return run(*args, **kwargs)
