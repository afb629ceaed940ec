"""Command line: python -m bench --suite {decode,batch_decode,prefill,operators,sampling,all}."""

import argparse
import sys

from bench import workloads


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark fi_core against the device ceilings (copy bandwidth, bf16 GEMM) and its "
                    "peers (FlashInfer, torch SDPA), all measured in the same run. 'decode' holds single "
                    "decode and the batched wrapper (with plan() host time); 'batch_decode' is the batched "
                    "part alone; 'all' runs decode, prefill, operators and sampling.")
    parser.add_argument("--suite", default="all", choices=workloads.SUITES + ["all"])
    parser.add_argument("--quick", action="store_true", help="reduced grid (under a minute per suite, "
                        "not counting FlashInfer's first-call JIT compilation)")
    parser.add_argument("--out", default="bench/results", help="results folder (default: bench/results)")
    parser.add_argument("--no-peers", action="store_true",
                        help="measure fi_core and the ceilings only (peers reported as missing)")
    parser.add_argument("--filter", action="append", default=[], metavar="TEXT",
                        help="run only workloads whose 'op label' contains TEXT, e.g. 'B=128 kv=4096'; "
                             "repeat to require several; results go to files named '.only-<filters>'")
    parser.add_argument("--list", action="store_true", help="print the grid and exit (no GPU needed)")
    return parser.parse_args(argv)


def gpu_unavailable_reason():
    """Why the benchmark cannot run here, or None when a CUDA GPU is usable."""
    try:
        import torch
    except Exception as exc:
        return f"PyTorch is not importable ({type(exc).__name__}: {exc})"
    try:
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible to PyTorch"
    except Exception as exc:
        return f"CUDA could not be initialised ({type(exc).__name__}: {exc})"
    return None


def list_grid(suites, quick, filter_text):
    for suite in suites:
        to_run, too_big = workloads.suite_workloads(suite, quick=quick)
        to_run = workloads.matching(to_run, filter_text)
        print(f"== suite {suite} ({'quick' if quick else 'full'} grid): {len(to_run)} workloads, "
              f"{len(too_big)} left out for memory")
        for workload in to_run:
            print("  " + workloads.describe(workload))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    suites = workloads.expand_suite_choice(args.suite)
    if args.list:
        list_grid(suites, args.quick, args.filter)
        return 0
    reason = gpu_unavailable_reason()
    if reason is not None:
        print(f"bench: {reason}; nothing was measured. Run this on a machine with a CUDA GPU.")
        return 0
    from bench import gpu_runner  # imports torch, fi_core and the peers
    return gpu_runner.run(suites, args)


if __name__ == "__main__":
    sys.exit(main())
