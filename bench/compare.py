"""Side-by-side table of fi_core's times from several `python -m bench` result folders.

Used by scripts/gpu_compare.sh to decide whether a kernel change (bench/experiments/) beats main:
the folders are measured in one run on one GPU, in the order base, change, base again, so the
two base columns show how much the timings drift between runs.

    python -m bench.compare NAME=FOLDER NAME=FOLDER ...
"""

import glob
import json
import os
import sys

SUBJECT = "fi_core"


def load_times(folder):
    """{(op, label): median time in us} of fi_core's successful rows in every JSON under folder."""
    times = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path) as handle:
            payload = json.load(handle)
        for row in payload.get("rows", []):
            result = row.get("results", {}).get(SUBJECT, {})
            if result.get("status") == "ok":
                times[(row["op"], row["label"])] = float(result["time_us"])
    return times


def render(columns):
    """Markdown table: one row per workload present in the first column, then the change's
    speed-up over the best base time (the first and any later column named like the first)."""
    names = [name for name, _ in columns]
    base_name = names[0]
    change_names = [name for name in names[1:] if not name.startswith(base_name)]
    header = "| workload | " + " | ".join(f"{name} (us)" for name in names)
    header += "".join(f" | {name} speed-up" for name in change_names) + " |"
    lines = [header, "|" + "---|" * (1 + len(names) + len(change_names))]
    for key in columns[0][1]:
        cells = [f"{times[key]:.1f}" if key in times else "-" for _, times in columns]
        base_times = [times[key] for name, times in columns if name.startswith(base_name) and key in times]
        ups = []
        for name, times in columns:
            if name in change_names:
                ups.append(f"{min(base_times) / times[key]:.2f}x" if key in times else "-")
        lines.append(f"| {key[0]} {key[1]} | " + " | ".join(cells + ups) + " |")
    return "\n".join(lines)


def main(argv):
    if not argv or any("=" not in arg for arg in argv):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    columns = []
    for arg in argv:
        name, folder = arg.split("=", 1)
        columns.append((name, load_times(folder)))
    if not columns[0][1]:
        print(f"no fi_core results under {argv[0]}", file=sys.stderr)
        return 1
    print(render(columns))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
