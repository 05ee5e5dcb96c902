"""An ONNX graph written node by node, its weights streamed to one external data file.

`GraphWriter` hands out fresh tensor names, collects nodes, and writes every initializer of
more than SMALL_BYTES straight to `model.onnx.data` as it is added (64-byte aligned, the
layout onnx's external-data loader reads), keeping only the TensorProto that points there.
So exporting holds one layer's arrays at a time besides the source model, never a second
copy of the whole model inside a ModelProto (which protobuf also caps at 2 GB).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

DATA_FILE = "model.onnx.data"
SMALL_BYTES = 1024          # initializers up to this size stay inside model.onnx
ALIGN = 64

NP_TO_ONNX = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int8): TensorProto.INT8,
              np.dtype(np.int16): TensorProto.INT16, np.dtype(np.int32): TensorProto.INT32,
              np.dtype(np.int64): TensorProto.INT64, np.dtype(np.uint16): TensorProto.BFLOAT16}


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """fp32 -> bfloat16 bit patterns (uint16), round to nearest even (finite inputs)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
    return (rounded >> np.uint32(16)).astype(np.uint16)


class GraphWriter:
    def __init__(self, out_dir: Path, opset: int):
        self.out_dir = Path(out_dir)
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self._data = open(self.out_dir / DATA_FILE, "wb")
        self._names: dict[str, int] = {}
        self._consts: dict[tuple, str] = {}

    def fresh(self, prefix: str) -> str:
        n = self._names.get(prefix, 0)
        self._names[prefix] = n + 1
        return prefix if n == 0 else f"{prefix}_{n}"

    def weight(self, name: str, array: np.ndarray, onnx_type: int | None = None) -> str:
        """An initializer from `array` (bf16: uint16 bits with onnx_type BFLOAT16); large ones go
        to the data file now. Returns its (fresh) name."""
        name = self.fresh(name)
        array = np.asarray(array, order="C")          # (ascontiguousarray makes 0-d 1-d)
        dtype = onnx_type if onnx_type is not None else NP_TO_ONNX[array.dtype]
        raw = array.tobytes()
        if len(raw) <= SMALL_BYTES:
            t = helper.make_tensor(name, dtype, array.shape, raw, raw=True)
        else:
            pad = (-self._data.tell()) % ALIGN
            self._data.write(b"\0" * pad)
            offset = self._data.tell()
            self._data.write(raw)
            t = TensorProto(name=name, data_type=dtype, dims=array.shape)
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", DATA_FILE), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
        self.initializers.append(t)
        return name

    def const(self, value, dtype=np.float32) -> str:
        """A scalar or small constant, shared by every node that uses the same value."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.weight("const", array)
        return self._consts[key]

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, name: str | None = None,
           domain: str = "", **attrs):
        """Add one node; returns its output name (or a list of n_out names)."""
        base = self.fresh(name or op_type.lower())
        outs = [base if n_out == 1 else f"{base}:{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=base, domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def save(self, inputs: list, outputs: list, doc: str) -> Path:
        """Close the data file and write model.onnx (the graph and the small initializers)."""
        self._data.close()
        graph = helper.make_graph(self.nodes, "bertqa", inputs, outputs, initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="bertqa", doc_string=doc)
        model.ir_version = min(model.ir_version, 10)       # what ONNX Runtime 1.20+ reads
        path = self.out_dir / "model.onnx"
        onnx.save_model(model, str(path))
        return path

    def close(self) -> None:
        if not self._data.closed:
            self._data.close()


def to_numpy(t) -> np.ndarray:
    """A torch tensor (any device, dtype) or array as a NumPy array without a gradient."""
    if isinstance(t, np.ndarray):
        return t
    return t.detach().cpu().numpy()

