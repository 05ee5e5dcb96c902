// int8_linear_module.cpp: bertqa._native, the native int8 Linear of backend 'customcpu'.
//
// What: docs/quantization.md steps 2-5 for one Linear layer in one call: dynamic activation
// quantization (per tensor or per row, with the NaN/Inf check folded into the max|x| pass, and
// for a smoothed layer the per-channel multiply x * input_scale folded into both passes), the
// int8 x int8 -> int32 GEMM on weights packed once, int16 shift-round-saturate (or int32 mode),
// dequantization y = q * ((sx * sw) * 2^s) + b, and optionally an exact (erf) GELU, all fused
// into the GEMM's store. xq, acc and q are bit-exact with bertqa/quant/reference.py; y differs
// by fp32 rounding only (the epilogue does not even fuse the multiply-add).
// Calibration (PackedLinear.calibrate): the same call, also returning max |acc| over the call,
// which the epilogues take from the exact int32 accumulators as they requantize them (no [M, N]
// array of accumulators is stored), so that the int16 shifts of a customcpu model are calibrated
// on this kernel rather than on the much slower reference (bertqa/quant/linear.py).
//
// How it is built: `pip install .` (setup.py: a pybind11 extension over NumPy buffers, no
// PyTorch headers or libraries; -fopenmp links libgomp, which resolves to the libgomp that
// torch already loaded, so both share one thread pool). No -march: every ISA path is compiled
// with per-function target attributes and chosen at run time from the CPU's features.
//
// Versions (each kept, side by side, as a path the dispatcher can run; rates are for the whole
// call on one Zen 4 core, by its CPU clock, on the BERT-large shapes of bertqa/bench/gemm.py):
//   v1 gemm_scalar.cpp       plain loops over row-major int8, int32 dot products. Portable; the
//                            named fallback when the CPU has neither AVX2 nor AVX-512 VNNI.
//   v2 gemm_avx2.cpp         int16 activations x weights sign-extended at pack time, vpmaddwd
//                            (exact; vpmaddubsw would saturate), 4 x 16 register tile that fits
//                            the 16 ymm registers, fused epilogue. ~150 GOPS (~80% of vpmaddwd).
//   v3 gemm_avx512vnni.cpp   vpdpbusd on u8 (xq + 128) activations and s8 weights packed in
//                            k-groups of 4, per-column compensation 128 * sum_k wq, 8 x 48
//                            register tile over the whole K, fused epilogue. ~410-440 GOPS,
//                            88-94% of the vpdpbusd peak (~465 GOPS per core).
//   int8_peak.cpp            tight vpdpbusd / vpmaddwd loops: the peak the GEMM is judged by.
//
// Threads: one region per call (thread_pool.h: OpenMP, or the native pool): max|x| per row
// (and, for per-row scales, the quantized row), a barrier, the quantized rows for a per-tensor
// scale and a barrier, then GEMM tiles claimed in guided chunks from a shared counter. Its size
// is omp_get_max_threads() -- what torch.set_num_threads() sets -- or set_threads(n), or the
// calling thread's own count (set_thread_threads).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "int8_linear.h"
#include "int8_linear_runtime.h"
#include "thread_pool.h"

namespace py = pybind11;
using namespace bertqa;

namespace bertqa {
void register_host_ops(py::module_& m);   // host_ops_module.cpp
}

namespace {

using FloatArray = py::array_t<float, py::array::c_style>;
using Int8Array = py::array_t<int8_t, py::array::c_style>;

const IsaKernels* kernels_named(const std::string& name) {
  if (name == "avx512vnni") return &kAvx512VnniKernels;
  if (name == "avx2") return &kAvx2Kernels;
  if (name == "scalar") return &kScalarKernels;
  throw std::invalid_argument("unknown ISA path '" + name + "' (avx512vnni, avx2, scalar)");
}

// The path that runs a layer of width K on this CPU when `isa` is asked for.
const IsaKernels* choose_kernels(const std::string& isa, int64_t K, std::string* path) {
  const IsaKernels* kern = kernels_named(isa);
  if (!cpu_supports_isa(isa))
    throw std::invalid_argument("this CPU cannot run the " + isa + " path");
  *path = isa;
  if (kern == &kAvx512VnniKernels && K > kMaxKOffsetU8) {
    const bool avx2 = cpu_supports_isa("avx2");
    kern = avx2 ? &kAvx2Kernels : &kScalarKernels;
    *path = std::string(kern->name) + " (fallback: K=" + std::to_string(K) + " > " +
            std::to_string(kMaxKOffsetU8) + ", the bound for the +128 offset of avx512vnni)";
  }
  return kern;
}

std::unique_ptr<PackedLinear> pack(Int8Array wq, FloatArray sw, py::object bias, int shift,
                                   const std::string& acts, const std::string& requant, bool gelu,
                                   const std::string& isa) {
  if (wq.ndim() != 2) throw std::invalid_argument("wq must be [N, K] int8");
  auto W = std::make_unique<PackedLinear>();
  W->N = wq.shape(0);
  W->K = wq.shape(1);
  if (W->N < 1 || W->K < 1) throw std::invalid_argument("wq must have N >= 1 and K >= 1");
  if (W->K > kMaxK)
    throw std::invalid_argument("K=" + std::to_string(W->K) + " > " + std::to_string(kMaxK) +
                                ": the int32 accumulator (docs/quantization.md step 3) could overflow");
  if (sw.ndim() != 1 || sw.shape(0) != W->N) throw std::invalid_argument("sw must be [N] fp32");
  if (shift < 0 || shift > 16) throw std::invalid_argument("shift must be in 0..16");
  if (acts != "tensor" && acts != "row") throw std::invalid_argument("acts must be tensor|row");
  if (requant != "int16" && requant != "int32")
    throw std::invalid_argument("requant must be int16|int32");
  if (requant == "int32" && shift != 0) throw std::invalid_argument("int32 mode has shift 0");
  W->shift = shift;
  W->requant_i16 = requant == "int16";
  W->acts_row = acts == "row";
  W->gelu = gelu;
  W->kern = choose_kernels(isa, W->K, &W->path);
  W->Kp = round_up(W->K, W->kern->k_group);
  W->Np = round_up(W->N, W->kern->panel);
  W->sw.resize(size_t(W->Np));
  W->bias.resize(size_t(W->Np));                         // zero: no bias, N padding
  std::fill(W->sw.data(), W->sw.data() + W->Np, 1.0f);
  std::copy(sw.data(), sw.data() + W->N, W->sw.data());
  if (!bias.is_none()) {
    auto b = bias.cast<FloatArray>();
    if (b.ndim() != 1 || b.shape(0) != W->N) throw std::invalid_argument("bias must be [N] fp32");
    std::copy(b.data(), b.data() + W->N, W->bias.data());
  }
  W->kern->pack_weights(*W, wq.data());
  return W;
}

// After calibration: the layer's calibrated shift and its GELU, in place of those it was packed
// with (the worst-case shift, no fused GELU), so that the packed weights are not packed again.
// The result is what pack() with these arguments gives. Not while a call runs on W.
void set_epilogue(PackedLinear& W, int shift, bool gelu) {
  if (shift < 0 || shift > 16) throw std::invalid_argument("shift must be in 0..16");
  if (!W.requant_i16 && shift != 0) throw std::invalid_argument("int32 mode has shift 0");
  W.shift = shift;
  W.gelu = gelu;
}

int64_t check_x(const PackedLinear& W, const FloatArray& x) {
  if (x.ndim() != 2 || x.shape(1) != W.K)
    throw std::invalid_argument("x must be [M, " + std::to_string(W.K) + "] fp32 C-contiguous");
  return x.shape(0);
}

// The optional per-channel multiply of x (smoothing): null, or [K] fp32, read in place. It is
// passed with every call (a view of the node's current tensor), so it can never be stale.
const float* check_scale(const PackedLinear& W, const std::optional<FloatArray>& scale) {
  if (!scale) return nullptr;
  if (scale->ndim() != 1 || scale->shape(0) != W.K)
    throw std::invalid_argument("input_scale must be [" + std::to_string(W.K) + "] fp32");
  return scale->data();
}

// M, after checking x [M, K] and y: a writable [M, N] array for the output.
int64_t check_x_y(const PackedLinear& W, const FloatArray& x, FloatArray& y) {
  const int64_t M = check_x(W, x);
  if (y.ndim() != 2 || y.shape(0) != M || y.shape(1) != W.N || !y.writeable())
    throw std::invalid_argument("y must be a writable [M, N] fp32 C-contiguous array");
  return M;
}

const char* nonfinite_name(int code) { return code == 2 ? "NaN" : code == 1 ? "Inf" : ""; }

// y (preallocated [M, N] fp32) <- the layer applied to x (times input_scale, if given). Returns
// (saturated, "" | "NaN" | "Inf", seconds quantizing, seconds in the GEMM + epilogue).
py::tuple run(const PackedLinear& W, FloatArray x, FloatArray y,
              std::optional<FloatArray> input_scale) {
  const int64_t M = check_x_y(W, x, y);
  const float* scale = check_scale(W, input_scale);
  RunResult r;
  {
    py::gil_scoped_release release;
    r = run_linear(W, x.data(), scale, M, y.mutable_data(), {});
  }
  return py::make_tuple(r.saturated, nonfinite_name(r.nonfinite), r.seconds_quantize,
                        r.seconds_gemm);
}

// Calibration: run() that also returns the largest |acc| of the call's exact int32 accumulators:
// (max_abs_acc, saturated, "" | "NaN" | "Inf"). y is exactly what run() would store.
py::tuple calibrate(const PackedLinear& W, FloatArray x, FloatArray y,
                    std::optional<FloatArray> input_scale) {
  const int64_t M = check_x_y(W, x, y);
  const float* scale = check_scale(W, input_scale);
  RunResult r;
  {
    py::gil_scoped_release release;
    r = run_linear(W, x.data(), scale, M, y.mutable_data(), {}, false, true);
  }
  return py::make_tuple(r.max_abs_acc, r.saturated, nonfinite_name(r.nonfinite));
}

// Benchmarks: run(), timed by the wall clock and by the threads' CPU time without barrier waits
// (on a shared machine the wall clock also counts other processes; the CPU time does not).
py::dict profile(const PackedLinear& W, FloatArray x, FloatArray y,
                 std::optional<FloatArray> input_scale) {
  const int64_t M = check_x_y(W, x, y);
  const float* scale = check_scale(W, input_scale);
  RunResult r;
  double seconds;
  {
    py::gil_scoped_release release;
    const auto t0 = std::chrono::steady_clock::now();
    r = run_linear(W, x.data(), scale, M, y.mutable_data(), {}, true);
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  py::dict out;
  out["seconds"] = seconds;
  out["busy_seconds"] = r.busy_seconds;
  out["seconds_quantize"] = r.seconds_quantize;
  out["seconds_gemm"] = r.seconds_gemm;
  out["threads"] = r.threads;
  out["saturated"] = r.saturated;
  out["nonfinite"] = nonfinite_name(r.nonfinite);
  return out;
}

// Tests: the same fused call, also returning xq, sx, acc and q.
py::dict run_debug(const PackedLinear& W, FloatArray x, std::optional<FloatArray> input_scale) {
  const int64_t M = check_x(W, x), N = W.N, K = W.K;
  const float* scale = check_scale(W, input_scale);
  FloatArray y({M, N}), sx({M});
  py::array_t<int32_t> acc({M, N}), q({M, N});
  Int8Array xq({M, K});
  DebugOut dbg{acc.mutable_data(), q.mutable_data(), xq.mutable_data(), sx.mutable_data()};
  const RunResult r = run_linear(W, x.data(), scale, M, y.mutable_data(), dbg);
  py::dict out;
  out["y"] = y;
  out["xq"] = xq;
  out["sx"] = sx;
  out["acc"] = acc;
  out["q"] = q;
  out["saturated"] = r.saturated;
  out["nonfinite"] = nonfinite_name(r.nonfinite);
  return out;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "bertqa native int8 Linear (docs/quantization.md steps 2-5); see csrc/int8_linear_module.cpp";
  py::class_<PackedLinear>(m, "PackedLinear")
      .def_readonly("K", &PackedLinear::K)
      .def_readonly("N", &PackedLinear::N)
      .def_readonly("shift", &PackedLinear::shift)
      .def_readonly("path", &PackedLinear::path)
      .def_property_readonly("isa", [](const PackedLinear& W) { return std::string(W.kern->name); })
      .def("run", &run, py::arg("x").noconvert(), py::arg("y").noconvert(),
           py::arg("input_scale").noconvert() = py::none())
      .def("set_epilogue", &set_epilogue, py::arg("shift"), py::arg("gelu"))
      .def("calibrate", &calibrate, py::arg("x").noconvert(), py::arg("y").noconvert(),
           py::arg("input_scale").noconvert() = py::none())
      .def("run_debug", &run_debug, py::arg("x").noconvert(),
           py::arg("input_scale").noconvert() = py::none())
      .def("profile", &profile, py::arg("x").noconvert(), py::arg("y").noconvert(),
           py::arg("input_scale").noconvert() = py::none());
  m.def("pack", &pack, py::arg("wq").noconvert(), py::arg("sw").noconvert(), py::arg("bias"),
        py::arg("shift"), py::arg("acts"), py::arg("requant"), py::arg("gelu"), py::arg("isa"),
        "Pack one layer's int8 weights [N, K] for the ISA path `isa`.");
  m.def("cpu_features", &cpu_features, "{'avx2': bool, 'avx512vnni': bool}: what this CPU runs.");
  m.def("set_threads", &set_threads, py::arg("n"), "Threads per call; 0 follows omp/torch.");
  m.def("set_thread_threads", &set_thread_threads, py::arg("n"),
        "Threads per call from the calling thread only; 0 follows the process's setting.");
  m.def("get_threads", &get_threads);
  m.def(
      "begin_native_forward",
      [](int omp_threads) {
        const ForwardThreads t = begin_native_forward(omp_threads);
        return py::make_tuple(t.native, t.omp, t.pool);
      },
      py::arg("omp_threads"),
      "From the calling thread: the native kernels keep its present count on the native pool, "
      "torch's OpenMP regions get omp_threads; returns what end_native_forward takes.");
  m.def(
      "end_native_forward",
      [](int native, int omp, bool pool) { end_native_forward({native, omp, pool}); },
      py::arg("native"), py::arg("omp"), py::arg("pool"));
  m.def("pool_threads", &pool_threads, "Worker threads the native pool has started so far.");
  m.def("threads_now", &threads_now, "The threads the kernels use now (1 during a contention episode).");
  m.def(
      "thread_guard",
      [](py::object enable, double serial_for) {
        const ThreadGuardState st =
            thread_guard(enable.is_none() ? -1 : int(enable.cast<bool>()), serial_for);
        py::dict out;
        out["enabled"] = st.enabled;
        out["serial_now"] = st.serial_now;
        out["serial_episodes"] = st.serial_episodes;
        out["next_episode_seconds"] = st.next_episode_seconds;
        return out;
      },
      py::arg("enable") = py::none(), py::arg("serial_for") = -1.0,
      "The contention guard: enable it (True/False), force one thread for serial_for seconds "
      "(0 ends an episode); returns {'enabled', 'serial_now', 'serial_episodes', "
      "'next_episode_seconds'}.");
  m.def("region_contended", &region_contended, py::arg("wall"), py::arg("min_cpu"),
        "Whether a region of `wall` seconds, whose least busy thread ran `min_cpu`, was contended.");
  m.def("note_region", &note_region, py::arg("wall"), py::arg("min_cpu"),
        "The guard's step after judging such a region (what every sampled call does; tests).");
  m.def("openmp_runtime", &openmp_runtime, "The OpenMP library the module resolved, or why none.");
  m.def("measure_peak", &measure_peak, py::arg("isa") = "avx512vnni", py::arg("seconds") = 0.3,
        py::arg("threads") = 0, py::arg("cpu_time") = false,
        "int8 GOPS of a tight multiply-add loop (see int8_linear_runtime.h).");
  register_host_ops(m);
  m.attr("MAX_K") = kMaxK;
  m.attr("MAX_K_AVX512VNNI") = kMaxKOffsetU8;
}
