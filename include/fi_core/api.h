// fi_core's C++ host API: the entry points behind the Python package, usable without Python.
// Arrays are described by TensorView (a DLPack-like, non-owning view with element strides); each
// entry point validates its arguments before launching anything and reports problems through a
// Status whose message names the argument, what was expected and what was given.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace fi_core {

enum class DType : int32_t {
  kFloat16,
  kBFloat16,
  kFloat32,
  kFloat64,
  kFloat8E4M3,  // e4m3fn
  kFloat8E5M2,
  kInt8,
  kUInt8,
  kInt16,
  kInt32,
  kInt64,
  kBool,
  kOther,
};
const char* dtype_name(DType dtype);

enum class KVLayout : int32_t { kNHD = 0, kHND = 1 };
enum class PosEncodingMode : int32_t { kNone = 0, kRoPELlama = 1, kALiBi = 2 };

constexpr int kMaxTensorDims = 8;

// A non-owning view of an array. Shape and strides count elements. `device` is the CUDA device
// ordinal, or -1 for memory that is not on a CUDA device. A view with ndim == 0 is "absent".
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kOther;
  int device = -1;
  int ndim = 0;
  int64_t shape[kMaxTensorDims] = {};
  int64_t strides[kMaxTensorDims] = {};

  bool present() const { return ndim > 0; }
  int64_t numel() const;
};

enum class StatusCode : int32_t {
  kOk = 0,
  kTypeError,   // wrong kind of array: host memory, wrong dtype
  kValueError,  // wrong shape, stride, device, option value, or a configuration not in this build
  kCudaError,   // the CUDA runtime reported an error
};

struct Status {
  StatusCode code = StatusCode::kOk;
  std::string message;

  bool ok() const { return code == StatusCode::kOk; }
  static Status Ok() { return {}; }
};

// ---------------------------------------------------------------------------------------------
// Single-request decode: one query token per head against a contiguous KV cache.
struct SingleDecodeArgs {
  TensorView q;    // [num_qo_heads, head_dim], fp16 or bf16
  TensorView k;    // [kv_len, num_kv_heads, head_dim] (NHD) or [num_kv_heads, kv_len, head_dim] (HND)
  TensorView v;    // like k; fp16, bf16, fp8 e4m3 or e5m2 (k and v alike)
  TensorView out;  // like q
  TensorView lse;  // optional float32 [num_qo_heads], base-2 log-sum-exp
  TensorView workspace;  // split-KV scratch of plan.workspace_bytes bytes (any dtype), if > 0
  KVLayout kv_layout = KVLayout::kNHD;
  PosEncodingMode pos_encoding_mode = PosEncodingMode::kNone;
  int32_t window_left = -1;      // -1: no sliding window
  float logits_soft_cap = 0.f;   // 0: off
  float sm_scale = 0.f;          // 0: 1 / sqrt(head_dim)
  float rope_scale = 1.f;
  float rope_theta = 1e4f;
  float q_scale = 1.f, k_scale = 1.f, v_scale = 1.f;  // fp8 dequantization scales
};

struct SingleDecodePlanInfo {
  uint32_t num_chunks = 1;   // KV splits merged at the end
  uint32_t chunk_len = 0;
  size_t workspace_bytes = 0;
};

// Validates `args` (workspace excepted) and sizes the split for the device that holds q.
Status plan_single_decode(const SingleDecodeArgs& args, SingleDecodePlanInfo* plan);
// Validates `args` and launches on `stream` (on q's device; the current device is restored).
Status single_decode(const SingleDecodeArgs& args, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// Per-token operators: RMSNorm, gated activations, rotary embeddings. Arrays of rows need a
// contiguous last dimension; their leading dimensions may have any strides that merge into at
// most two strided levels (a [batch, heads, dim] view into a packed QKV buffer is fine). Every
// data array of one call has the same dtype: float16, bfloat16 or float32. Any row length works;
// 16-byte accesses are used wherever a row's address allows them.

// out = input / sqrt(mean(input^2) + eps) * weight, or * (1 + weight) with gemma; float32 math.
struct RMSNormArgs {
  TensorView input;   // [batch_size, hidden_size] or [batch_size, num_heads, hidden_size]
  TensorView weight;  // [hidden_size], contiguous
  TensorView out;     // like input; may be input itself
  float eps = 1e-6f;
  bool gemma = false;
};
Status rmsnorm(const RMSNormArgs& args, cudaStream_t stream);

// In place: residual += input; input = RMSNorm of that sum (taken in float32, before rounding).
struct FusedAddRMSNormArgs {
  TensorView input;     // [batch_size, hidden_size] or [batch_size, num_heads, hidden_size]
  TensorView residual;  // like input
  TensorView weight;    // [hidden_size], contiguous
  float eps = 1e-6f;
  bool gemma = false;
};
Status fused_add_rmsnorm(const FusedAddRMSNormArgs& args, cudaStream_t stream);

enum class Activation : int32_t { kSilu = 0, kGelu = 1, kGeluTanh = 2 };

// out[..., i] = act(input[..., i]) * input[..., d + i]; float32 math.
struct ActAndMulArgs {
  TensorView input;  // [..., 2 * d]
  TensorView out;    // [..., d]
  Activation activation = Activation::kSilu;
};
Status act_and_mul(const ActAndMulArgs& args, cudaStream_t stream);

// Rotary embedding of q and k (conventions: include/flashinfer/rope.cuh). A token whose position
// is unknown (no request of indptr holds it) or outside cos_sin_cache gets NaN in its rotated
// dims: positions are on the GPU, so the host cannot reject them without a synchronization.
struct RopeArgs {
  TensorView q;       // [nnz, num_q_heads, head_dim], or [nnz, num_q_heads * head_size]
  TensorView k;       // [nnz, num_k_heads, head_dim], or [nnz, num_k_heads * head_size]
  TensorView q_rope;  // like q; may be q itself (in place)
  TensorView k_rope;  // like k; may be k itself
  // Positions (int32 or int64): pos_ids [nnz], or indptr [batch_size + 1] with offsets
  // [batch_size], a request's tokens at offsets[b], offsets[b] + 1, ...
  TensorView pos_ids, indptr, offsets;
  // Optional float32 [max_position, rotary_dim]: cos of the rotary_dim / 2 pairs, then their sin.
  // It fixes rotary_dim and replaces rope_scale, rope_theta and the Llama 3.1 scaling.
  TensorView cos_sin_cache;
  int64_t head_size = 0;    // > 0: q and k are 2-D, heads of head_size packed in the last dimension
  int32_t rotary_dim = 0;   // dims that rotate, from the start of each head; 0: all
  bool interleave = false;  // GPT-J pairs (2i, 2i + 1), else NeoX halves (i, i + rotary_dim / 2)
  float rope_scale = 1.f, rope_theta = 1e4f;
  bool llama31 = false;  // Llama 3.1 frequency scaling with these three:
  float low_freq_factor = 1.f, high_freq_factor = 4.f, old_context_len = 8192.f;
};
Status apply_rope(const RopeArgs& args, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// Sorting-free sampling (conventions and odd-input behaviour: include/flashinfer/sampling.cuh).
// probs: float32 [num_rows, vocab_size] with a contiguous last dimension, rows need not sum to 1.
// Each filter is applied when its use_* flag is set, with one value per output row from its
// array (int32 top_k, float32 top_p / min_p, [batch_size]) or else the scalar.
struct SamplingArgs {
  TensorView probs;
  TensorView samples;  // int32 [batch_size], the sampled token ids
  TensorView indices;  // optional int32/int64 [batch_size]: samples[i] is drawn from probs[indices[i]];
                       // absent: batch_size = num_rows
  bool use_top_k = false, use_top_p = false, use_min_p = false;
  TensorView top_k, top_p, min_p;
  int32_t top_k_val = 0;    // scalar top-k: >= 1
  float top_p_val = 1.f;    // scalar top-p: in (0, 1]
  float min_p_val = 0.f;    // scalar min-p: in [0, 1]
  bool top_k_first = true;  // both top-k and top-p: top-p over the top-k set (else the joint filter)
  uint64_t seed = 0, offset = 0;  // Philox: row i uses (seed, subsequence i, offset)
};
Status sampling_from_probs(const SamplingArgs& args, cudaStream_t stream);

// out[i] = probs[i] restricted to its top-k or top-p set, divided by the kept mass.
struct RenormProbsArgs {
  TensorView probs;  // float32 [batch_size, vocab_size]
  TensorView out;    // like probs (may be probs itself)
  bool use_top_k = false, use_top_p = false;
  TensorView top_k, top_p;  // optional per-row values, as in SamplingArgs
  int32_t top_k_val = 0;
  float top_p_val = 1.f;
};
Status renorm_probs(const RenormProbsArgs& args, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// What this build contains.
struct BuildInfo {
  std::string version;
  std::vector<std::string> cuda_archs;  // e.g. "80", "90a"
  std::vector<int> head_dims;
  std::vector<std::string> q_dtypes;
  std::vector<std::string> kv_dtypes;
  std::string cuda_version;     // nvcc that built the kernels
  std::string cutlass_version;  // CuTe/CUTLASS headers compiled into the build
  std::string cutlass_source;   // where they came from
};
BuildInfo build_info();

// Number of visible CUDA devices; 0 when there is no driver or GPU.
int cuda_device_count();

}  // namespace fi_core
