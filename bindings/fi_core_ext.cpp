// nanobind module fi_core._C: DLPack arrays in, fi_core host API calls out. Thin by design:
// argument checking lives in the host API (src/), framework adaptation in python/fi_core/.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

#include "fi_core/api.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

// Any DLPack array. Read-only is requested so that frameworks which flag their exports read-only
// (JAX) are accepted; the host API writes only to the output arrays it is handed.
using Array = nb::ndarray<nb::ro>;
using OptionalArray = std::optional<Array>;

fi_core::DType to_dtype(nb::dlpack::dtype dt) {
  using Code = nb::dlpack::dtype_code;
  using fi_core::DType;
  if (dt.lanes != 1) return DType::kOther;
  switch (Code(dt.code)) {
    case Code::Float:
      return dt.bits == 16 ? DType::kFloat16
             : dt.bits == 32 ? DType::kFloat32
             : dt.bits == 64 ? DType::kFloat64
                             : DType::kOther;
    case Code::Bfloat: return dt.bits == 16 ? DType::kBFloat16 : DType::kOther;
    case Code::Float8_E4M3FN: return DType::kFloat8E4M3;
    case Code::Float8_E5M2: return DType::kFloat8E5M2;
    case Code::Int:
      return dt.bits == 8 ? DType::kInt8
             : dt.bits == 16 ? DType::kInt16
             : dt.bits == 32 ? DType::kInt32
             : dt.bits == 64 ? DType::kInt64
                             : DType::kOther;
    case Code::UInt: return dt.bits == 8 ? DType::kUInt8 : DType::kOther;
    case Code::Bool: return DType::kBool;
    default: return DType::kOther;
  }
}

fi_core::TensorView view(const OptionalArray& a, const char* name) {
  fi_core::TensorView t;
  if (!a) return t;
  if (a->ndim() > size_t(fi_core::kMaxTensorDims))
    throw nb::value_error((std::string(name) + ": expected at most " +
                           std::to_string(fi_core::kMaxTensorDims) + " dimensions, got " +
                           std::to_string(a->ndim())).c_str());
  t.data = const_cast<void*>(a->data());
  t.dtype = to_dtype(a->dtype());
  t.device = a->device_type() == nb::device::cuda::value ? a->device_id() : -1;
  t.ndim = int(a->ndim());
  for (int i = 0; i < t.ndim; ++i) {
    t.shape[i] = int64_t(a->shape(i));
    t.strides[i] = a->stride(i);
  }
  return t;
}

// fp8 arrays arrive as uint8 views (not every framework exports fp8 through DLPack); the
// Python layer names their real dtype.
void reinterpret_fp8(fi_core::TensorView& t, const std::optional<std::string>& fp8_dtype) {
  if (!fp8_dtype || t.dtype != fi_core::DType::kUInt8) return;
  if (*fp8_dtype == "float8_e4m3fn") t.dtype = fi_core::DType::kFloat8E4M3;
  else if (*fp8_dtype == "float8_e5m2") t.dtype = fi_core::DType::kFloat8E5M2;
}

void throw_if_error(const fi_core::Status& st) {
  switch (st.code) {
    case fi_core::StatusCode::kOk: return;
    case fi_core::StatusCode::kTypeError: throw nb::type_error(st.message.c_str());
    case fi_core::StatusCode::kValueError: throw nb::value_error(st.message.c_str());
    default: throw std::runtime_error(st.message);
  }
}

fi_core::SingleDecodeArgs single_decode_args(
    const OptionalArray& q, const OptionalArray& k, const OptionalArray& v, const OptionalArray& out,
    const OptionalArray& lse, const OptionalArray& workspace, const std::optional<std::string>& kv_fp8_dtype,
    int kv_layout, int pos_encoding_mode, int window_left, float logits_soft_cap, float sm_scale,
    float rope_scale, float rope_theta, float q_scale, float k_scale, float v_scale) {
  fi_core::SingleDecodeArgs a;
  a.q = view(q, "q");
  a.k = view(k, "k");
  a.v = view(v, "v");
  reinterpret_fp8(a.k, kv_fp8_dtype);
  reinterpret_fp8(a.v, kv_fp8_dtype);
  a.out = view(out, "out");
  a.lse = view(lse, "lse");
  a.workspace = view(workspace, "workspace");
  a.kv_layout = fi_core::KVLayout(kv_layout);
  a.pos_encoding_mode = fi_core::PosEncodingMode(pos_encoding_mode);
  a.window_left = window_left;
  a.logits_soft_cap = logits_soft_cap;
  a.sm_scale = sm_scale;
  a.rope_scale = rope_scale;
  a.rope_theta = rope_theta;
  a.q_scale = q_scale;
  a.k_scale = k_scale;
  a.v_scale = v_scale;
  return a;
}

// Launches are asynchronous; `synchronize` waits for the stream (for callers such as JAX that
// cannot order work on an external stream). Runs without the GIL; errors are raised after.
fi_core::Status launch_and_wait(const std::function<fi_core::Status()>& launch, uintptr_t stream,
                                bool synchronize) {
  nb::gil_scoped_release release;
  fi_core::Status st = launch();
  if (st.ok() && synchronize) {
    cudaError_t err = cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream));
    if (err != cudaSuccess) {
      cudaGetLastError();
      st = {fi_core::StatusCode::kCudaError,
            std::string("CUDA error ") + cudaGetErrorName(err) + ": " + cudaGetErrorString(err)};
    }
  }
  return st;
}

nb::dict build_info_dict() {
  const fi_core::BuildInfo info = fi_core::build_info();
  nb::dict d;
  d["version"] = info.version;
  d["cuda_archs"] = info.cuda_archs;
  d["head_dims"] = info.head_dims;
  d["q_dtypes"] = info.q_dtypes;
  d["kv_dtypes"] = info.kv_dtypes;
  d["cuda_version"] = info.cuda_version;
  d["cutlass_version"] = info.cutlass_version;
  d["cutlass_source"] = info.cutlass_source;
  return d;
}

}  // namespace

NB_MODULE(_C, m) {
  m.doc() = "fi_core kernels (ahead-of-time compiled); use the fi_core package, not this module";
  m.def("build_info", &build_info_dict);
  m.def("cuda_device_count", &fi_core::cuda_device_count);

#define FI_CORE_SINGLE_DECODE_ARGS                                                             \
  "q"_a.none(), "k"_a.none(), "v"_a.none(), "out"_a.none(), "lse"_a.none(), "workspace"_a.none(), \
      "kv_fp8_dtype"_a.none(), "kv_layout"_a, "pos_encoding_mode"_a, "window_left"_a,           \
      "logits_soft_cap"_a, "sm_scale"_a, "rope_scale"_a, "rope_theta"_a, "q_scale"_a,            \
      "k_scale"_a, "v_scale"_a

  m.def(
      "plan_single_decode",
      [](OptionalArray q, OptionalArray k, OptionalArray v, OptionalArray out, OptionalArray lse,
         OptionalArray workspace, std::optional<std::string> kv_fp8_dtype, int kv_layout,
         int pos_encoding_mode, int window_left, float logits_soft_cap, float sm_scale,
         float rope_scale, float rope_theta, float q_scale, float k_scale, float v_scale) {
        const auto args = single_decode_args(q, k, v, out, lse, workspace, kv_fp8_dtype, kv_layout,
                                             pos_encoding_mode, window_left, logits_soft_cap,
                                             sm_scale, rope_scale, rope_theta, q_scale, k_scale, v_scale);
        fi_core::SingleDecodePlanInfo plan;
        throw_if_error(fi_core::plan_single_decode(args, &plan));
        return std::make_tuple(plan.num_chunks, plan.chunk_len, plan.workspace_bytes);
      },
      FI_CORE_SINGLE_DECODE_ARGS,
      "Validates a single-decode call; returns (num_chunks, chunk_len, workspace_bytes).");

  m.def(
      "single_decode",
      [](OptionalArray q, OptionalArray k, OptionalArray v, OptionalArray out, OptionalArray lse,
         OptionalArray workspace, std::optional<std::string> kv_fp8_dtype, int kv_layout,
         int pos_encoding_mode, int window_left, float logits_soft_cap, float sm_scale,
         float rope_scale, float rope_theta, float q_scale, float k_scale, float v_scale,
         uintptr_t stream, bool synchronize) {
        const auto args = single_decode_args(q, k, v, out, lse, workspace, kv_fp8_dtype, kv_layout,
                                             pos_encoding_mode, window_left, logits_soft_cap,
                                             sm_scale, rope_scale, rope_theta, q_scale, k_scale, v_scale);
        throw_if_error(launch_and_wait(
            [&] { return fi_core::single_decode(args, reinterpret_cast<cudaStream_t>(stream)); },
            stream, synchronize));
      },
      FI_CORE_SINGLE_DECODE_ARGS, "stream"_a, "synchronize"_a,
      "Launches single-request decode on `stream` (a cudaStream_t as an integer).");
#undef FI_CORE_SINGLE_DECODE_ARGS

  m.def(
      "rmsnorm",
      [](OptionalArray input, OptionalArray weight, OptionalArray out, float eps, bool gemma,
         uintptr_t stream, bool synchronize) {
        fi_core::RMSNormArgs args;
        args.input = view(input, "input");
        args.weight = view(weight, "weight");
        args.out = view(out, "out");
        args.eps = eps;
        args.gemma = gemma;
        throw_if_error(launch_and_wait(
            [&] { return fi_core::rmsnorm(args, reinterpret_cast<cudaStream_t>(stream)); }, stream,
            synchronize));
      },
      "input"_a.none(), "weight"_a.none(), "out"_a.none(), "eps"_a, "gemma"_a, "stream"_a,
      "synchronize"_a, "out = RMSNorm(input) * weight (gemma: * (1 + weight)), launched on `stream`.");

  m.def(
      "fused_add_rmsnorm",
      [](OptionalArray input, OptionalArray residual, OptionalArray weight, float eps, bool gemma,
         uintptr_t stream, bool synchronize) {
        fi_core::FusedAddRMSNormArgs args;
        args.input = view(input, "input");
        args.residual = view(residual, "residual");
        args.weight = view(weight, "weight");
        args.eps = eps;
        args.gemma = gemma;
        throw_if_error(launch_and_wait(
            [&] { return fi_core::fused_add_rmsnorm(args, reinterpret_cast<cudaStream_t>(stream)); },
            stream, synchronize));
      },
      "input"_a.none(), "residual"_a.none(), "weight"_a.none(), "eps"_a, "gemma"_a, "stream"_a,
      "synchronize"_a, "In place: residual += input, input = RMSNorm(residual) * weight.");

  m.def(
      "sampling_from_probs",
      [](OptionalArray probs, OptionalArray samples, OptionalArray indices, bool use_top_k,
         OptionalArray top_k, int32_t top_k_val, bool use_top_p, OptionalArray top_p,
         float top_p_val, bool use_min_p, OptionalArray min_p, float min_p_val, bool top_k_first,
         uint64_t seed, uint64_t offset, uintptr_t stream, bool synchronize) {
        fi_core::SamplingArgs args;
        args.probs = view(probs, "probs");
        args.samples = view(samples, "samples");
        args.indices = view(indices, "indices");
        args.use_top_k = use_top_k;
        args.top_k = view(top_k, "top_k");
        args.top_k_val = top_k_val;
        args.use_top_p = use_top_p;
        args.top_p = view(top_p, "top_p");
        args.top_p_val = top_p_val;
        args.use_min_p = use_min_p;
        args.min_p = view(min_p, "min_p");
        args.min_p_val = min_p_val;
        args.top_k_first = top_k_first;
        args.seed = seed;
        args.offset = offset;
        throw_if_error(launch_and_wait(
            [&] { return fi_core::sampling_from_probs(args, reinterpret_cast<cudaStream_t>(stream)); },
            stream, synchronize));
      },
      "probs"_a.none(), "samples"_a.none(), "indices"_a.none(), "use_top_k"_a, "top_k"_a.none(),
      "top_k_val"_a, "use_top_p"_a, "top_p"_a.none(), "top_p_val"_a, "use_min_p"_a,
      "min_p"_a.none(), "min_p_val"_a, "top_k_first"_a, "seed"_a, "offset"_a, "stream"_a,
      "synchronize"_a, "samples[i] ~ probs[indices[i] or i] after the enabled filters, on `stream`.");

  m.def(
      "renorm_probs",
      [](OptionalArray probs, OptionalArray out, bool use_top_k, OptionalArray top_k,
         int32_t top_k_val, bool use_top_p, OptionalArray top_p, float top_p_val, uintptr_t stream,
         bool synchronize) {
        fi_core::RenormProbsArgs args;
        args.probs = view(probs, "probs");
        args.out = view(out, "out");
        args.use_top_k = use_top_k;
        args.top_k = view(top_k, "top_k");
        args.top_k_val = top_k_val;
        args.use_top_p = use_top_p;
        args.top_p = view(top_p, "top_p");
        args.top_p_val = top_p_val;
        throw_if_error(launch_and_wait(
            [&] { return fi_core::renorm_probs(args, reinterpret_cast<cudaStream_t>(stream)); },
            stream, synchronize));
      },
      "probs"_a.none(), "out"_a.none(), "use_top_k"_a, "top_k"_a.none(), "top_k_val"_a,
      "use_top_p"_a, "top_p"_a.none(), "top_p_val"_a, "stream"_a, "synchronize"_a,
      "out = probs restricted to the top-k or top-p set, renormalized, on `stream`.");

  m.def(
      "act_and_mul",
      [](OptionalArray input, OptionalArray out, int activation, uintptr_t stream, bool synchronize) {
        fi_core::ActAndMulArgs args;
        args.input = view(input, "input");
        args.out = view(out, "out");
        args.activation = fi_core::Activation(activation);
        throw_if_error(launch_and_wait(
            [&] { return fi_core::act_and_mul(args, reinterpret_cast<cudaStream_t>(stream)); }, stream,
            synchronize));
      },
      "input"_a.none(), "out"_a.none(), "activation"_a, "stream"_a, "synchronize"_a,
      "out = act(input[..., :d]) * input[..., d:] (activation 0 silu, 1 gelu, 2 gelu_tanh).");

  m.def(
      "apply_rope",
      [](OptionalArray q, OptionalArray k, OptionalArray q_rope, OptionalArray k_rope,
         OptionalArray pos_ids, OptionalArray indptr, OptionalArray offsets,
         OptionalArray cos_sin_cache, int64_t head_size, int32_t rotary_dim, bool interleave,
         float rope_scale, float rope_theta, bool llama31, float low_freq_factor,
         float high_freq_factor, float old_context_len, uintptr_t stream, bool synchronize) {
        fi_core::RopeArgs args;
        args.q = view(q, "q");
        args.k = view(k, "k");
        args.q_rope = view(q_rope, "q_rope");
        args.k_rope = view(k_rope, "k_rope");
        args.pos_ids = view(pos_ids, "pos_ids");
        args.indptr = view(indptr, "indptr");
        args.offsets = view(offsets, "offsets");
        args.cos_sin_cache = view(cos_sin_cache, "cos_sin_cache");
        args.head_size = head_size;
        args.rotary_dim = rotary_dim;
        args.interleave = interleave;
        args.rope_scale = rope_scale;
        args.rope_theta = rope_theta;
        args.llama31 = llama31;
        args.low_freq_factor = low_freq_factor;
        args.high_freq_factor = high_freq_factor;
        args.old_context_len = old_context_len;
        throw_if_error(launch_and_wait(
            [&] { return fi_core::apply_rope(args, reinterpret_cast<cudaStream_t>(stream)); }, stream,
            synchronize));
      },
      "q"_a.none(), "k"_a.none(), "q_rope"_a.none(), "k_rope"_a.none(), "pos_ids"_a.none(),
      "indptr"_a.none(), "offsets"_a.none(), "cos_sin_cache"_a.none(), "head_size"_a,
      "rotary_dim"_a, "interleave"_a, "rope_scale"_a, "rope_theta"_a, "llama31"_a,
      "low_freq_factor"_a, "high_freq_factor"_a, "old_context_len"_a, "stream"_a, "synchronize"_a,
      "Rotary embedding of q and k into q_rope and k_rope (which may be q and k), on `stream`.");
}
