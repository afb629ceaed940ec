"""fi_core: ahead-of-time compiled attention and LLM-serving kernels with FlashInfer's Python API.

Arrays from any framework that speaks DLPack (PyTorch, CuPy, JAX) are accepted; results come back
in the caller's framework. `import fi_core as flashinfer` works for the operations fi_core covers.
"""

from __future__ import annotations

import os

from . import _C
from .activation import gelu_and_mul, gelu_tanh_and_mul, silu_and_mul
from .cascade import merge_state, merge_state_in_place, merge_states
from .decode import (
    BatchDecodeWithPagedKVCacheWrapper,
    CUDAGraphBatchDecodeWithPagedKVCacheWrapper,
    single_decode_with_kv_cache,
)
from .norm import fused_add_rmsnorm, gemma_fused_add_rmsnorm, gemma_rmsnorm, rmsnorm
from .page import append_paged_kv_cache, get_batch_indices_positions, get_seq_lens
from .prefill import (
    BatchPrefillWithPagedKVCacheWrapper,
    BatchPrefillWithRaggedKVCacheWrapper,
    single_prefill_with_kv_cache,
    single_prefill_with_kv_cache_return_lse,
)
from .quantization import packbits, segment_packbits
from .rope import (
    apply_llama31_rope,
    apply_llama31_rope_inplace,
    apply_llama31_rope_pos_ids,
    apply_llama31_rope_pos_ids_inplace,
    apply_rope,
    apply_rope_inplace,
    apply_rope_pos_ids,
    apply_rope_pos_ids_inplace,
    apply_rope_with_cos_sin_cache,
    apply_rope_with_cos_sin_cache_inplace,
)
from .sampling import (
    chain_speculative_sampling,
    min_p_sampling_from_probs,
    sampling_from_logits,
    sampling_from_probs,
    top_k_mask_logits,
    top_k_renorm_probs,
    top_k_sampling_from_probs,
    top_k_top_p_sampling_from_logits,
    top_k_top_p_sampling_from_probs,
    top_p_renorm_probs,
    top_p_sampling_from_probs,
)

__version__ = _C.build_info()["version"]

__all__ = [
    "build_info", "get_include", "__version__",
    "single_decode_with_kv_cache",
    "BatchDecodeWithPagedKVCacheWrapper", "CUDAGraphBatchDecodeWithPagedKVCacheWrapper",
    "single_prefill_with_kv_cache", "single_prefill_with_kv_cache_return_lse",
    "BatchPrefillWithPagedKVCacheWrapper", "BatchPrefillWithRaggedKVCacheWrapper",
    "rmsnorm", "fused_add_rmsnorm", "gemma_rmsnorm", "gemma_fused_add_rmsnorm",
    "silu_and_mul", "gelu_and_mul", "gelu_tanh_and_mul",
    "apply_rope", "apply_rope_inplace", "apply_rope_pos_ids", "apply_rope_pos_ids_inplace",
    "apply_llama31_rope", "apply_llama31_rope_inplace", "apply_llama31_rope_pos_ids",
    "apply_llama31_rope_pos_ids_inplace",
    "apply_rope_with_cos_sin_cache", "apply_rope_with_cos_sin_cache_inplace",
    "sampling_from_probs", "top_p_sampling_from_probs", "top_k_sampling_from_probs",
    "min_p_sampling_from_probs", "top_k_top_p_sampling_from_probs",
    "top_p_renorm_probs", "top_k_renorm_probs",
    "sampling_from_logits", "top_k_top_p_sampling_from_logits", "top_k_mask_logits",
    "chain_speculative_sampling",
    "append_paged_kv_cache", "get_batch_indices_positions", "get_seq_lens",
    "merge_state", "merge_state_in_place", "merge_states",
    "packbits", "segment_packbits",
]


def build_info() -> dict:
    """What this build contains: CUDA archs, head dims, dtypes, CUDA and CUTLASS versions."""
    return dict(_C.build_info())


def get_include() -> str:
    """Directory holding the C++ headers (include/flashinfer, include/fi_core) of this build."""
    return os.path.join(os.path.dirname(__file__), "include")
