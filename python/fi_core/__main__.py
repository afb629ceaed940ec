"""`python -m fi_core`: what this build contains; on a GPU machine, a self-check and a speed line."""

import sys

from . import _C, build_info


def main() -> int:
    info = build_info()
    print(f"fi_core {info['version']} (CUDA {info['cuda_version']}, CUTLASS/CuTe {info['cutlass_version']} "
          f"from {info['cutlass_source']})")
    print(f"  CUDA archs: {', '.join('sm_' + a for a in info['cuda_archs'])}")
    print(f"  head dims:  {', '.join(str(d) for d in info['head_dims'])}")
    print(f"  q/o dtypes: {', '.join(info['q_dtypes'])}")
    print(f"  KV dtypes:  {', '.join(info['kv_dtypes'])}")
    print("  kernels:    single_decode_with_kv_cache (NONE / ROPE_LLAMA / ALIBI, soft cap, sliding window, lse)")
    print("              rmsnorm family, silu/gelu/gelu_tanh_and_mul, RoPE family (fp16/bf16/fp32)")
    print("              sampling from probs (top-k / top-p / min-p), top-k / top-p renorm (fp32)")
    if _C.cuda_device_count() == 0:
        print("No CUDA GPU found on this machine: GPU self-check and benchmark skipped.")
        return 0
    from . import _selfcheck
    return 0 if _selfcheck.run(info["head_dims"]) else 1


if __name__ == "__main__":
    sys.exit(main())
