// Uses sampling from C++ without Python: the host API (validated; link libfi_core_kernels.a) and
// the header template directly.
#include <cuda_runtime.h>

#include "fi_core/api.h"
#include "flashinfer/sampling.cuh"

// Host API: top-k then top-p sampling of `batch` float32 rows, one (seed, offset) per step.
fi_core::Status sample_with_host_api(float* probs, int32_t* samples, int batch, int vocab,
                                     uint64_t seed, uint64_t offset, cudaStream_t stream) {
  fi_core::SamplingArgs args;
  args.probs.data = probs;
  args.probs.dtype = fi_core::DType::kFloat32;
  args.probs.device = 0;
  args.probs.ndim = 2;
  args.probs.shape[0] = batch;
  args.probs.shape[1] = vocab;
  args.probs.strides[0] = vocab;
  args.probs.strides[1] = 1;
  args.samples.data = samples;
  args.samples.dtype = fi_core::DType::kInt32;
  args.samples.device = 0;
  args.samples.ndim = 1;
  args.samples.shape[0] = batch;
  args.samples.strides[0] = 1;
  args.use_top_k = args.use_top_p = true;
  args.top_k_val = 50;
  args.top_p_val = 0.9f;
  args.seed = seed;
  args.offset = offset;
  return fi_core::sampling_from_probs(args, stream);
}

// Header template: the same launch, no validation.
cudaError_t sample_with_header(const float* probs, int32_t* samples, uint32_t batch, uint32_t vocab,
                               cudaStream_t stream) {
  flashinfer::sampling::SamplingParams p{};
  p.probs = probs;
  p.probs_stride = vocab;
  p.num_prob_rows = p.batch_size = batch;
  p.vocab_size = vocab;
  p.use_min_p = true;
  p.min_p = 0.05f;
  p.seed = 42;
  p.samples = samples;
  return flashinfer::sampling::SampleOrRenorm(p, stream);
}
