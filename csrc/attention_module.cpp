// attention_module.cpp: the Python binding of attention_bf16 (registered by int8_linear_module.cpp
// into bertqa._native): zero-copy over C-contiguous fp32 NumPy arrays, GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "attention_bf16.h"
#include "int8_linear_runtime.h"

namespace py = pybind11;

namespace bertqa {
namespace {

using FloatArray = py::array_t<float, py::array::c_style>;

// out [B*S, H] <- attention of qkv [B*S, 3H]; key_bias: None or [B, S].
void attention(FloatArray qkv, py::object key_bias, int64_t batch, int64_t heads, float scale,
               FloatArray out) {
  if (qkv.ndim() != 2 || batch < 1 || heads < 1 || qkv.shape(0) % batch || qkv.shape(1) % (3 * heads))
    throw std::invalid_argument("qkv must be [batch * seq, 3 * heads * head_size] fp32");
  const int64_t S = qkv.shape(0) / batch, H = qkv.shape(1) / 3, d = H / heads;
  if (out.ndim() != 2 || out.shape(0) != qkv.shape(0) || out.shape(1) != H || !out.writeable())
    throw std::invalid_argument("out must be a writable [batch * seq, heads * head_size] fp32 array");
  const float* bias = nullptr;
  FloatArray kb;
  if (!key_bias.is_none()) {
    kb = key_bias.cast<FloatArray>();
    if (kb.ndim() != 2 || kb.shape(0) != batch || kb.shape(1) != S)
      throw std::invalid_argument("key_bias must be [batch, seq] fp32");
    bias = kb.data();
  }
  py::gil_scoped_release release;
  attention_bf16(qkv.data(), bias, batch, S, heads, d, scale, out.mutable_data(), get_threads());
}

}  // namespace

void register_attention(py::module_& m) {
  m.def("attention_bf16", &attention, py::arg("qkv").noconvert(), py::arg("key_bias"),
        py::arg("batch"), py::arg("heads"), py::arg("scale"), py::arg("out").noconvert(),
        "BERT self-attention on AVX512-BF16: out <- softmax(scale Q K^T + key_bias) V.");
  m.def("attention_bf16_supported", &attention_bf16_supported,
        "Whether this CPU has AVX512-BF16 (and the AVX-512 subsets attention_bf16 uses).");
}

}  // namespace bertqa
