// fi_core host API: merging attention states (FlashInfer's flashinfer.cascade).
#pragma once

#include "fi_core/core.h"

namespace fi_core {

// An attention state is a partial output v, normalized over its own keys, with s, the base-2
// log-sum-exp of their logits (float32). Merging the states of disjoint key sets gives the state
// of their union: s = log2(sum_i 2^s_i), v = sum_i 2^(s_i - s) v_i, computed relative to the
// largest s_i. A state with s = -inf (no visible key) adds nothing; if every state has
// s = -inf, v = 0 and s = -inf. v is float16, bfloat16 or float32 with a contiguous head_dim;
// other dimensions may have any strides.

// Two states per (row, head): (out, lse) = merge((v_a, s_a), (v_b, s_b)).
struct MergeStateArgs {
  TensorView v_a, s_a, v_b, s_b;  // v [seq_len, num_heads, head_dim], s float32 [seq_len, num_heads]
  TensorView out, lse;            // like v_a and s_a
};
Status merge_state(const MergeStateArgs& args, cudaStream_t stream);

// (v, s) = merge((v, s), (v_other, s_other)) in place, for the rows whose mask entry is nonzero
// (every row without a mask); the other rows keep their values.
struct MergeStateInPlaceArgs {
  TensorView v, s;              // v [seq_len, num_heads, head_dim], s float32 [seq_len, num_heads]
  TensorView v_other, s_other;  // like v and s
  TensorView mask;              // optional bool or uint8 [seq_len]
};
Status merge_state_in_place(const MergeStateInPlaceArgs& args, cudaStream_t stream);

// All states of a row: (out[r], lse[r]) = merge of (v[r, i], s[r, i]) over i < num_states. The
// kernel is the one that merges the split-KV partial results of decode: head_dim is 8 x a power of
// two up to 1024, and v and out need 16-byte aligned rows.
struct MergeStatesArgs {
  TensorView v;    // [seq_len, num_states, num_heads, head_dim]
  TensorView s;    // float32 [seq_len, num_states, num_heads]
  TensorView out;  // [seq_len, num_heads, head_dim], v's dtype
  TensorView lse;  // float32 [seq_len, num_heads]
};
Status merge_states(const MergeStatesArgs& args, cudaStream_t stream);

}  // namespace fi_core
