// host_ops_module.cpp: the Python bindings of the host-side kernels around the int8 Linears,
// attention_bf16, attention_fp32, add_layer_norm and gelu (registered by int8_linear_module.cpp into bertqa._native):
// zero-copy over C-contiguous fp32 NumPy arrays, GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "add_layer_norm.h"
#include "attention_bf16.h"
#include "attention_fp32.h"
#include "gelu.h"
#include "thread_runtime.h"

namespace py = pybind11;

namespace bertqa {
namespace {

using FloatArray = py::array_t<float, py::array::c_style>;

using AttentionKernel = void (*)(const float*, const float*, int64_t, int64_t, int64_t, int64_t,
                                float, float*, int);

// out [B*S, H] <- attention of qkv [B*S, 3H] by `kernel`; key_bias: None or [B, S].
void attention(AttentionKernel kernel, FloatArray qkv, py::object key_bias, int64_t batch,
               int64_t heads, float scale, FloatArray out) {
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
  kernel(qkv.data(), bias, batch, S, heads, d, scale, out.mutable_data(), threads_now());
}

// out [M, N] <- LayerNorm(x + y) * gamma + beta; out may be x or y.
void add_norm(FloatArray x, FloatArray y, FloatArray gamma, FloatArray beta, float eps, FloatArray out,
              bool portable) {
  if (x.ndim() != 2 || y.ndim() != 2 || out.ndim() != 2 || x.shape(0) != y.shape(0) ||
      x.shape(1) != y.shape(1) || out.shape(0) != x.shape(0) || out.shape(1) != x.shape(1) ||
      !out.writeable())
    throw std::invalid_argument("x, y and out must be [M, N] fp32 arrays of one shape (out writable)");
  const int64_t M = x.shape(0), N = x.shape(1);
  if (gamma.ndim() != 1 || gamma.shape(0) != N || beta.ndim() != 1 || beta.shape(0) != N)
    throw std::invalid_argument("gamma and beta must be [" + std::to_string(N) + "] fp32");
  py::gil_scoped_release release;
  add_layer_norm(x.data(), y.data(), gamma.data(), beta.data(), eps, M, N, out.mutable_data(),
                 threads_now(), portable);
}

// y (any shape, C-contiguous fp32) <- gelu(y) as the `isa` path's epilogue computes it.
void gelu(FloatArray y, const std::string& isa) {
  if (!y.writeable()) throw std::invalid_argument("y must be a writable fp32 array");
  float* data = y.mutable_data();
  const int64_t n = y.size();
  py::gil_scoped_release release;
  gelu_inplace(data, n, isa, threads_now());
}

}  // namespace

void register_host_ops(py::module_& m) {
  m.def("attention_bf16",
        [](FloatArray qkv, py::object bias, int64_t batch, int64_t heads, float scale, FloatArray out) {
          attention(attention_bf16, qkv, bias, batch, heads, scale, out);
        },
        py::arg("qkv").noconvert(), py::arg("key_bias"),
        py::arg("batch"), py::arg("heads"), py::arg("scale"), py::arg("out").noconvert(),
        "BERT self-attention on AVX512-BF16: out <- softmax(scale Q K^T + key_bias) V.");
  m.def("attention_bf16_supported", &attention_bf16_supported,
        "Whether this CPU has AVX512-BF16 (and the AVX-512 subsets attention_bf16 uses).");
  m.def("attention_fp32",
        [](FloatArray qkv, py::object bias, int64_t batch, int64_t heads, float scale, FloatArray out) {
          attention(attention_fp32, qkv, bias, batch, heads, scale, out);
        },
        py::arg("qkv").noconvert(), py::arg("key_bias"), py::arg("batch"), py::arg("heads"),
        py::arg("scale"), py::arg("out").noconvert(),
        "BERT self-attention in fp32 on AVX2: out <- softmax(scale Q K^T + key_bias) V.");
  m.def("attention_fp32_supported", &attention_fp32_supported,
        "Whether this CPU has AVX2 and FMA (what attention_fp32 uses).");
  m.def("add_layer_norm", &add_norm, py::arg("x").noconvert(), py::arg("y").noconvert(),
        py::arg("gamma").noconvert(), py::arg("beta").noconvert(), py::arg("eps"),
        py::arg("out").noconvert(), py::arg("portable") = false,
        "out <- LayerNorm(x + y) * gamma + beta, row by row (portable: skip the AVX-512 path).");
  m.def("gelu", &gelu, py::arg("y").noconvert(), py::arg("isa"),
        "y <- exact GELU of y in place, the per-element function of the ISA path's fused epilogue.");
}

}  // namespace bertqa
