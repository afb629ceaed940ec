"""Times fi_core's batch decode of bench-shaped inputs under several split choices, to see where
the automatic split loses to another one:

    python3 -m bench.split_sweep --batch 8 --batch 16 --batch 32 --kv-len 32768 \\
        --split auto --split whole --split 1024 --split 256

--split: "auto" (plan's default), "whole" (disable_split_kv: one CTA column per request) or a
number of pages (fixed_split_size). Each line: the plan's decision (chunk length, grid columns,
partial rows), the median time, and the fraction of the copy bandwidth measured in the same run.
The inputs are the benchmark's (random pages of a pool, NHD, bf16), timed the benchmark's way.
"""

import argparse
import sys

from bench import workloads


def split_choice(text):
    if text in ("auto", "whole"):
        return text
    pages = int(text)
    if pages <= 0:
        raise argparse.ArgumentTypeError(f"expected auto, whole or a positive number of pages, got {text}")
    return pages


def plan_options(split):
    if split == "auto":
        return {}
    if split == "whole":
        return {"disable_split_kv": True}
    return {"fixed_split_size": split}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.split_sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, action="append", required=True)
    parser.add_argument("--kv-len", type=int, default=32768)
    parser.add_argument("--heads", default="32/8", help="query heads / KV heads (default 32/8)")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--page-size", type=int, default=16)
    parser.add_argument("--split", type=split_choice, action="append", required=True)
    parser.add_argument("--use-tensor-cores", choices=["auto", "yes", "no"], default="auto")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    num_qo_heads, num_kv_heads = (int(x) for x in args.heads.split("/"))
    import torch  # only now: argument errors show on any machine
    from bench import report
    from bench.gpu_runner import (FULL_TIMING, GpuTimer, build_batch_decode, load_libraries, measure_ceilings,
                                  new_workspace)
    fi_core = load_libraries(use_peers=False)["fi_core"].module
    tensor_cores = {"auto": None, "yes": True, "no": False}[args.use_tensor_cores]
    timer = GpuTimer(FULL_TIMING)
    copy_tbps = measure_ceilings(timer)["copy_tbps"]
    print(f"GPU: {torch.cuda.get_device_name()}; copy {copy_tbps:.2f} TB/s")
    print("| batch | split | chunk_len | columns | partial rows | kernel | time | of copy |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in args.batch:
        params = dict(batch=batch, kv_len=args.kv_len, num_qo_heads=num_qo_heads, num_kv_heads=num_kv_heads,
                      head_dim=args.head_dim, page_size=args.page_size, kv_dtype="bf16")
        inputs = build_batch_decode(params)
        bytes_moved = workloads.decode_bytes(batch, args.kv_len, num_qo_heads, num_kv_heads, args.head_dim, "bf16")
        for split in args.split:
            wrapper = fi_core.BatchDecodeWithPagedKVCacheWrapper(new_workspace(), "NHD",
                                                                 use_tensor_cores=tensor_cores)
            wrapper.plan(inputs.indptr, inputs.indices, inputs.last_page_len, num_qo_heads, num_kv_heads,
                         args.head_dim, args.page_size, q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16,
                         **plan_options(split))
            info = wrapper.plan_info()
            time_us = timer.first_call_then_measure(lambda: wrapper.run(inputs.q, inputs.cache))["time_us"]
            fraction = report.achieved_tbps(bytes_moved, time_us) / copy_tbps
            kernel = "tensor cores" if info["tensor_cores"] else "CUDA cores"
            print(f"| {batch} | {split} | {info['chunk_len']} | {info['num_work_items']} | "
                  f"{info['num_partial_rows']} | {kernel} | {time_us:.1f} us | {fraction:.2f} |", flush=True)
        del inputs
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
