// Uses sampling from C++ without Python: the host API (validated; link libfi_core_kernels.a) and
// the header templates directly.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "fi_core/api.h"
#include "flashinfer/sampling.cuh"

// Host API: top-k then top-p sampling of `batch` float32 rows, one (seed, offset) per step.
fi_core::Status sample_with_host_api(float* probs, int32_t* samples, int batch, int vocab,
                                     uint64_t seed, uint64_t offset, cudaStream_t stream) {
  fi_core::SamplingArgs args;
  args.input.data = probs;
  args.input.dtype = fi_core::DType::kFloat32;
  args.input.device = 0;
  args.input.ndim = 2;
  args.input.shape[0] = batch;
  args.input.shape[1] = vocab;
  args.input.strides[0] = vocab;
  args.input.strides[1] = 1;
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

// Header templates, no validation: min-p sampling from probabilities, and top-k masking of
// float16 logits in place.
flashinfer::sampling::SamplingParams contiguous_rows(const void* input, uint32_t batch, uint32_t vocab,
                                                     flashinfer::sampling::SamplingMode mode) {
  flashinfer::sampling::SamplingParams p{};
  p.input = input;
  p.input_stride = vocab;
  p.num_input_rows = p.batch_size = batch;
  p.vocab_size = vocab;
  p.mode = mode;
  return p;
}

cudaError_t sample_with_header(const float* probs, int32_t* samples, uint32_t batch, uint32_t vocab,
                               cudaStream_t stream) {
  auto p = contiguous_rows(probs, batch, vocab, flashinfer::sampling::SamplingMode::kSample);
  p.use_min_p = true;
  p.min_p = 0.05f;
  p.seed = 42;
  p.samples = samples;
  return flashinfer::sampling::SampleOrRenorm(p, stream);
}

cudaError_t mask_with_header(half* logits, uint32_t batch, uint32_t vocab, cudaStream_t stream) {
  auto p = contiguous_rows(logits, batch, vocab, flashinfer::sampling::SamplingMode::kMaskLogits);
  p.use_top_k = true;
  p.top_k = 20;
  p.out = logits;
  p.out_stride = vocab;
  return flashinfer::sampling::TopKMaskLogits<half>(p, stream);
}
