"""Calls one implementation on chosen bench workloads a few times, untimed, for a profiler:

    ncu -k regex:filter_rows --launch-skip 2 --launch-count 1 --section SpeedOfLight \\
        python3 -m bench.profile --suite sampling --quick --filter top_p --filter "B=128 "

The inputs are those the benchmark builds, so the profile is of the benchmarked workload.
"""

import argparse
import sys

from bench import workloads


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True, choices=workloads.SUITES)
    parser.add_argument("--quick", action="store_true", help="choose from the quick grid")
    parser.add_argument("--filter", action="append", default=[], metavar="TEXT",
                        help="workloads whose 'op label' contains TEXT (repeat to require several)")
    parser.add_argument("--implementation", default=workloads.SUBJECT)
    parser.add_argument("--calls", type=int, default=3, help="calls per workload (default 3)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    chosen, _ = workloads.suite_workloads(args.suite, quick=args.quick)
    chosen = workloads.matching(chosen, args.filter)
    if not chosen:
        print("bench.profile: no workload matches the filters", file=sys.stderr)
        return 2
    unknown = [w.op for w in chosen if args.implementation not in w.implementations]
    if unknown:
        print(f"bench.profile: {args.implementation} does not implement {sorted(set(unknown))}",
              file=sys.stderr)
        return 2
    import torch  # only now: the checks above run on any machine
    from bench.gpu_runner import OPS, load_libraries
    libraries = load_libraries(use_peers=True)
    for workload in chosen:
        build_inputs, factories = OPS[workload.op]
        fn = factories[args.implementation](build_inputs(workload.params), workload.params, libraries)
        for _ in range(args.calls):
            fn()
        torch.cuda.synchronize()
        print(f"profiled {args.implementation} {workload.op} {workload.label}: {args.calls} calls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
