"""int8 Linear quantization per docs/quantization.md: spec, reference, custom nodes."""
from bertqa.quant.spec import QuantSpec
from bertqa.quant.linear import (CustomLinear, QLinear, prepare_linear, quantize_model,
                                 layer_summary, custom_nodes, flush_stats)
from bertqa.quant import reference

__all__ = ["QuantSpec", "CustomLinear", "QLinear", "prepare_linear", "quantize_model",
           "layer_summary", "custom_nodes", "flush_stats", "reference"]
