"""Table of per-kernel figures from a ptxas -v log and a cuobjdump -sass listing (see
kernel_stats.sh): python3 kernel_stats.py PTXAS_LOG SASS REGEX"""

import re
import subprocess
import sys

# SASS opcodes counted, by what they cost our kernels.
COUNTED = {
    "ATOMS": r"\bATOMS\.(?!CAS)",     # shared-memory atomics (histograms)
    "CAS": r"\bATOMS\.CAS",           # compare-and-swap spin loops (64-bit or float shared atomics)
    "LDL/STL": r"\b(LDL|STL)\b",      # local memory: spills and stack arrays
    "BAR": r"\bBAR\.",                # CTA barriers
    "LDG": r"\bLDG\b",                # global loads
    "LDGSTS": r"\bLDGSTS\b",          # cp.async
    "LDS": r"\bLDS(M)?\b",            # shared loads (and ldmatrix)
    "HMMA": r"\bHMMA\b",              # tensor-core mma.sync
}


def demangle(names):
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True)
        return out.stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return names


# A line naming the kernel the next figures belong to.
KERNEL_LINE = re.compile(r"(?:Compiling entry function '|Function properties for )([^'\s]+)")


def ptxas_figures(log):
    """{mangled kernel: [registers, stack bytes, spill stores, spill loads]}"""
    figures, current = {}, None
    for line in log.splitlines():
        if m := KERNEL_LINE.search(line):
            current = m.group(1)
        elif m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line):
            figures[current] = [None, *map(int, m.groups())]
        elif (m := re.search(r"Used (\d+) registers", line)) and current in figures:
            figures[current][0] = int(m.group(1))
    return figures


def sass_counts(sass):
    """{mangled kernel: {opcode class: static count, "instructions": n}}"""
    counts, current = {}, None
    for line in sass.splitlines():
        m = re.search(r"Function : (\S+)", line)
        if m:
            current = m.group(1)
            counts[current] = dict.fromkeys([*COUNTED, "instructions"], 0)
            continue
        if current and re.search(r"/\*[0-9a-f]{4,}\*/\s+\S", line):
            counts[current]["instructions"] += 1
            for name, pattern in COUNTED.items():
                if re.search(pattern, line):
                    counts[current][name] += 1
    return counts


def main(log_path, sass_path, pattern):
    figures = ptxas_figures(open(log_path).read())
    counts = sass_counts(open(sass_path).read())
    kernels = [k for k in counts if k in figures]
    names = demangle(kernels)
    header = ["regs", "stack", "spill st", "spill ld", *COUNTED, "instructions"]
    print("| kernel | " + " | ".join(header) + " |")
    print("|---" * (len(header) + 1) + "|")
    for mangled, name in zip(kernels, names):
        if not re.search(pattern, name):
            continue
        short = re.sub(r"flashinfer::", "", name)
        short = short if len(short) <= 110 else short[:107] + "..."
        cells = [*figures[mangled], *(counts[mangled][c] for c in [*COUNTED, "instructions"])]
        print(f"| {short} | " + " | ".join(str(c) for c in cells) + " |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
