"""A prepared int8 model's nodes as plain tensors and records, and nodes built back from them.

What a node is, is step 1's output (docs/quantization.md) plus what calibration chose: wq [N, K] int8,
sw [N] fp32, bias [N] fp32 (if any), input_scale [K] fp32 (if smoothed), the shift and whether
the node applies GELU. Those are backend-independent, so a model saved from one backend can be
rebuilt on any other without the fp32 weights and without calibrating again.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from bertqa.quant.linear import QLinear, backend_object, custom_nodes, remove_modules, swap_linears
from bertqa.quant.node_record import LinearWeights
from bertqa.quant.spec import QuantSpec

NODE_TENSORS = ("wq", "sw", "bias", "input_scale")


class SavedNodeError(ValueError):
    """A saved node's tensors or record do not fit the model (the message names which)."""


def node_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """({'<node>.wq': ..., '<node>.sw': ..., ...}, {'<node>': {K, N, shift, gelu}}) of every
    int8 node of `model`, on the CPU."""
    tensors, records = {}, {}
    for node in custom_nodes(model):
        lw = node.lw
        assert lw.precision == "int" and lw.wq is not None, f"{lw.name}: only int8 nodes are saved"
        for key, t in (("wq", lw.wq), ("sw", lw.sw), ("bias", lw.bias), ("input_scale", node.input_scale)):
            if t is not None:
                tensors[f"{lw.name}.{key}"] = t.detach().to("cpu").contiguous()
        records[lw.name] = {"in_features": lw.in_features, "out_features": lw.out_features,
                            "shift": lw.shift, "gelu": lw.gelu}
    return tensors, records


def nodes_from_state(model: nn.Module, get: Callable[[str], torch.Tensor], names: set[str],
                     records: dict[str, dict], spec: QuantSpec, backend) -> list[QLinear]:
    """Replace every nn.Linear of `model` (weights may be on `meta`) by the int8 node saved for
    it: get(name) reads one of the saved tensors, `names` are those there are. Layers whose
    record says gelu get their activation module (the model's gelu_fusions()) removed."""
    target = backend_object(backend)
    fusions = getattr(model, "gelu_fusions", lambda: {})()

    def make_node(name: str, linear: nn.Linear) -> QLinear:
        if name not in records:
            raise SavedNodeError(f"no record for layer {name!r} (key layers.{name})")
        rec = records[name]
        n, k = linear.out_features, linear.in_features
        if (rec["out_features"], rec["in_features"]) != (n, k):
            raise SavedNodeError(f"layer {name}: saved as N={rec['out_features']}, K={rec['in_features']}, "
                                 f"the model has N={n}, K={k}")
        saved = {key: read(name, key, names, get, shape)
                 for key, shape in (("wq", (n, k)), ("sw", (n,)), ("bias", (n,)), ("input_scale", (k,)))}
        if saved["wq"] is None or saved["sw"] is None:
            raise SavedNodeError(f"layer {name}: tensors {name}.wq and {name}.sw are required")
        if saved["wq"].dtype != torch.int8:
            raise SavedNodeError(f"tensor {name}.wq is {saved['wq'].dtype}, not int8")
        if rec["gelu"] and name not in fusions:
            raise SavedNodeError(f"layer {name} is saved with GELU fused, which this model does not allow")
        lw = LinearWeights(name=name, in_features=k, out_features=n, precision="int",
                           bias=saved["bias"], wq=saved["wq"], sw=saved["sw"],
                           shift=rec["shift"], spec=spec, gelu=rec["gelu"])
        node = QLinear(lw, target)
        node.input_scale = saved["input_scale"]
        return node

    swap_linears(model, make_node)
    remove_modules(model, [act for lin, act in fusions.items() if records[lin]["gelu"]])
    return custom_nodes(model)


def read(name: str, key: str, names: set[str], get, shape: tuple) -> torch.Tensor | None:
    """Saved tensor '<name>.<key>' checked against `shape` (None if absent); floats as fp32."""
    full = f"{name}.{key}"
    if full not in names:
        return None
    t = get(full)
    if tuple(t.shape) != shape:
        raise SavedNodeError(f"tensor {full} has shape {tuple(t.shape)}, expected {shape}")
    return t if key == "wq" else t.to(torch.float32)
