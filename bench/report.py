"""Results: derived figures, the markdown table, the JSON payload, file names, LATEST.md.

Pure Python (no torch): everything here works on plain dicts so it can be tested on a CPU.

A row is a dict made by the runner:
    {"op", "label", "params", "bound", "flops", "bytes",
     "results": {implementation: result}, "check": {implementation: relative error}}
and a result is one of ok(time_us), missing(reason), failed(error).
"""

import json
import os
import re

from bench.workloads import COMPUTE_BOUND, LATENCY, MEMORY_BOUND, SUBJECT, SUITES

# Outputs further apart than this (relative L2 norm) are flagged under the table.
CHECK_TOLERANCE = 2e-2
# Missing/error text is cut to this length in table cells; the notes below the table and the
# JSON keep it whole.
CELL_REASON_CHARS = 70


def ok(time_us, **extra):
    return {"status": "ok", "time_us": float(time_us), **extra}


def missing(reason):
    return {"status": "missing", "reason": str(reason)}


def failed(error):
    return {"status": "error", "error": str(error)}


def is_ok(result):
    return result is not None and result.get("status") == "ok"


# ---------------------------------------------------------------------------------------------
# Derived figures
# ---------------------------------------------------------------------------------------------

def achieved_tbps(num_bytes, time_us):
    return num_bytes / (time_us * 1e-6) / 1e12


def achieved_tflops(flops, time_us):
    return flops / (time_us * 1e-6) / 1e12


def ceiling_name(bound):
    return {MEMORY_BOUND: "copy", COMPUTE_BOUND: "GEMM"}.get(bound)


def fraction_of_ceiling(row, time_us, ceilings):
    """Achieved TB/s over copy TB/s, or TFLOP/s over GEMM TFLOP/s; None for latency rows or
    when the ceiling could not be measured."""
    if row["bound"] == MEMORY_BOUND and ceilings.get("copy_tbps"):
        return achieved_tbps(row["bytes"], time_us) / ceilings["copy_tbps"]
    if row["bound"] == COMPUTE_BOUND and ceilings.get("gemm_tflops"):
        return achieved_tflops(row["flops"], time_us) / ceilings["gemm_tflops"]
    return None


def speed_ratio(subject_time_us, peer_time_us):
    """Subject speed over peer speed: above 1 means fi_core is faster."""
    return peer_time_us / subject_time_us


def add_derived_figures(row, ceilings):
    """Fill in throughput, fraction of ceiling and the subject/peer speed ratios (in place)."""
    for result in row["results"].values():
        if not is_ok(result):
            continue
        time_us = result["time_us"]
        if row.get("bytes"):
            result["tbps"] = achieved_tbps(row["bytes"], time_us)
        if row.get("flops"):
            result["tflops"] = achieved_tflops(row["flops"], time_us)
        result["fraction_of_ceiling"] = fraction_of_ceiling(row, time_us, ceilings)
    subject = row["results"].get(SUBJECT)
    row["speed_vs_peer"] = {}
    if is_ok(subject):
        for name, result in row["results"].items():
            if name != SUBJECT and is_ok(result):
                row["speed_vs_peer"][name] = speed_ratio(subject["time_us"], result["time_us"])
    return row


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------

def format_time_us(time_us):
    if time_us < 10:
        return f"{time_us:.2f} us"
    if time_us < 1000:
        return f"{time_us:.1f} us"
    return f"{time_us / 1000:.2f} ms"


def _cell_text(text):
    text = str(text).replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= CELL_REASON_CHARS else text[: CELL_REASON_CHARS - 3] + "..."


def format_not_ok(result):
    if result is None:
        return "missing: not measured"
    if result["status"] == "missing":
        return _cell_text(f"missing: {result['reason']}")
    return _cell_text(f"error: {result['error']}")


def format_subject_cells(row, subject):
    """fi_core's time, throughput and fraction of ceiling (the last two only where they apply)."""
    has_ceiling = row["bound"] in (MEMORY_BOUND, COMPUTE_BOUND)
    if not is_ok(subject):
        return [format_not_ok(subject)] + (["-", "-"] if has_ceiling else [])
    cells = [format_time_us(subject["time_us"])]
    if row["bound"] == MEMORY_BOUND:
        cells.append(f"{achieved_tbps(row['bytes'], subject['time_us']):.2f}")
    elif row["bound"] == COMPUTE_BOUND:
        cells.append(f"{achieved_tflops(row['flops'], subject['time_us']):.1f}")
    if has_ceiling:
        fraction = subject.get("fraction_of_ceiling")
        cells.append("-" if fraction is None else f"{fraction:.2f}")
    return cells


def format_peer_cell(row, subject, peer):
    """'<fi_core speed / peer speed>x (<peer time>[; <peer fraction> of <ceiling>])'."""
    if not is_ok(peer):
        return format_not_ok(peer)
    details = format_time_us(peer["time_us"])
    if peer.get("fraction_of_ceiling") is not None:
        details += f"; {peer['fraction_of_ceiling']:.2f} of {ceiling_name(row['bound'])}"
    if not is_ok(subject):
        return f"- ({details})"
    return f"{speed_ratio(subject['time_us'], peer['time_us']):.2f}x ({details})"


def table_header(bound, implementations):
    columns = ["workload", implementations[0]]
    if bound == MEMORY_BOUND:
        columns += ["TB/s", "of copy"]
    elif bound == COMPUTE_BOUND:
        columns += ["TFLOP/s", "of GEMM"]
    columns += list(implementations[1:])
    return columns


def render_op_table(rows):
    """Markdown table of rows of one op (same columns), followed by its notes."""
    implementations = list(rows[0]["results"])
    bound = rows[0]["bound"]
    header = table_header(bound, implementations)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        subject = row["results"].get(implementations[0])
        cells = [row["label"]] + format_subject_cells(row, subject)
        cells += [format_peer_cell(row, subject, row["results"].get(name)) for name in implementations[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += render_notes(rows)
    return "\n".join(lines)


def render_notes(rows):
    """Full missing/error reasons (each once) and output-check disagreements."""
    reasons = {}
    for row in rows:
        for name, result in row["results"].items():
            if result is not None and result["status"] == "missing":
                reasons.setdefault(f"{name}: missing: {result['reason']}", []).append(row["label"])
            elif result is not None and result["status"] == "error":
                reasons.setdefault(f"{name}: error: {result['error']}", []).append(row["label"])
    notes = []
    for reason, labels in reasons.items():
        where = "all rows" if len(labels) == len(rows) else ", ".join(labels[:3]) + (
            f" and {len(labels) - 3} more" if len(labels) > 3 else "")
        notes.append(f"- {reason} ({where})")
    waits = [row for row in rows if row.get("settle")]
    if waits:
        longest = max(waits, key=lambda row: row["settle"]["waited_ms"])
        notes.append(f"- Waited for device memory to return to full copy speed after gigabytes were freed or "
                     f"mapped, before {len(waits)} workload(s) (longest {longest['settle']['waited_ms']:.0f} ms, "
                     f"before {longest['label']})")
    for row in rows:
        settled = row.get("settle")
        if settled and not settled["settled"]:
            notes.append(f"- UNSETTLED {row['label']}: timed while the copy probe still read "
                         f"{settled['last_tbps']:.2f} TB/s after {settled['waited_ms']:.0f} ms of waiting")
        for name, result in row["results"].items():
            if is_ok(result) and result.get("host_bound"):
                notes.append(f"- HOST-BOUND {row['label']}: one {name} call takes {result['host_call_us']:.0f} us "
                             "on the host, longer than the GPU is kept busy before it, so its time includes "
                             "launch gaps")
        for name, relative_error in (row.get("check") or {}).items():
            if relative_error is None or relative_error > CHECK_TOLERANCE:
                shown = "not finite" if relative_error is None else f"{relative_error:.2e}"
                notes.append(f"- OUTPUT MISMATCH {row['label']}: {name} differs from {SUBJECT} "
                             f"by {shown} (relative L2; tolerance {CHECK_TOLERANCE})")
    return ([""] + notes) if notes else []


def rows_by_op(rows):
    groups = {}
    for row in rows:
        groups.setdefault(row["op"], []).append(row)
    return groups


def render_markdown(payload):
    meta, ceilings = payload["meta"], payload["ceilings"]
    lines = [f"# fi_core benchmark: {payload['suite']} suite{' (quick grid)' if payload.get('quick') else ''}",
             ""]
    versions = ", ".join(f"{name} {version}" for name, version in meta.get("versions", {}).items())
    lines.append(f"GPU: {meta.get('gpu', '?')}; date {meta.get('date', '?')}; {versions}.")
    copy = ceilings.get("copy_tbps")
    gemm = ceilings.get("gemm_tflops")
    lines.append("Ceilings measured in this run: device copy "
                 + (f"{copy:.2f} TB/s" if copy else f"not measured ({ceilings.get('copy_error')})")
                 + " (bytes read + written), bf16 GEMM 8192^3 "
                 + (f"{gemm:.0f} TFLOP/s" if gemm else f"not measured ({ceilings.get('gemm_error')})")
                 + ".")
    lines.append(f"Timing: {meta.get('timing', '?')}.")
    lines.append("Columns after fi_core's: fi_core speed / that implementation's speed (above 1: fi_core "
                 "is faster), then its time and its own fraction of the ceiling in parentheses.")
    for note in meta.get("notes", []):
        lines.append(f"Note: {note}")
    skipped = payload.get("skipped_for_memory") or []
    if skipped:
        lines.append(f"Left out for memory (> {meta.get('max_footprint_gb', 60)} GB): {len(skipped)} grid points.")
    if payload.get("filters"):
        lines.append("Only the workloads matching all of: " + ", ".join(f"'{f}'" for f in payload["filters"]) + ".")
    if payload.get("aborted"):
        lines.append(f"RUN ABORTED: {payload['aborted']}")
    if payload.get("incomplete"):
        lines.append(f"INCOMPLETE (run interrupted): {payload['incomplete']}.")
    for op, rows in rows_by_op(payload["rows"]).items():
        title = f"{op} (host time of plan())" if rows[0]["bound"] == LATENCY and op.endswith("_plan") else op
        lines += ["", f"## {title}", "", render_op_table(rows)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def gpu_slug(gpu_name):
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-")
    return slug or "unknown-gpu"


def result_stem(date, gpu_name, suite, quick=False, filters=()):
    """Base name of a suite's result files: <YYYY-MM-DD>-<gpu-slug>-<suite>, with '-quick' for the
    reduced grid (so it never overwrites a full run of the same day) and '.only-<filters>' for a
    run restricted with --filter (such partial tables are left out of LATEST.md)."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
        raise ValueError(f"date must be YYYY-MM-DD, got {date!r}")
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}")
    stem = f"{date}-{gpu_slug(gpu_name)}-{suite}" + ("-quick" if quick else "")
    if filters:
        stem += ".only-" + gpu_slug("+".join(filters))
    return stem


_STEM_PATTERN = re.compile(r"^(\d{4}-\d{2}-\d{2})-([a-z0-9-]+)-(" + "|".join(SUITES) + r")(-quick)?\.md$")


def parse_result_name(file_name):
    """(date, gpu slug, suite, quick) of a whole-suite result table's file name, else None."""
    match = _STEM_PATTERN.match(file_name)
    if match is None:
        return None
    date, slug, suite, quick = match.groups()
    return date, slug, suite, quick is not None


def write_json(payload, path):
    with open(path, "w") as handle:
        json.dump(payload, handle, indent=1, sort_keys=False, default=str)
        handle.write("\n")


def write_text(text, path):
    with open(path, "w") as handle:
        handle.write(text)


def update_latest(results_dir):
    """Rewrite LATEST.md: the newest full-grid and quick-grid table of each suite (by date, then
    modification time)."""
    newest = {}
    for file_name in os.listdir(results_dir):
        parsed = parse_result_name(file_name)
        if parsed is None:
            continue
        date, slug, suite, quick = parsed
        order = (date, os.path.getmtime(os.path.join(results_dir, file_name)))
        if (suite, quick) not in newest or order > newest[(suite, quick)][0]:
            newest[(suite, quick)] = (order, date, slug, file_name)
    lines = ["# Latest benchmark results", "",
             "Newest table of each suite, written by `python -m bench`. Ratios are against the "
             "ceilings and peers measured in the same run.", ""]
    if not newest:
        lines.append("No results yet: run `python -m bench --suite all` on a GPU machine.")
    else:
        lines += ["| suite | grid | date | GPU | table | raw data | plot |", "|---|---|---|---|---|---|---|"]
        for suite in SUITES:
            for quick in (False, True):
                if (suite, quick) not in newest:
                    continue
                _, date, slug, file_name = newest[(suite, quick)]
                stem = file_name[: -len(".md")]
                data = f"[json]({stem}.json)" if os.path.exists(os.path.join(results_dir, stem + ".json")) else "-"
                plot = f"[png]({stem}.png)" if os.path.exists(os.path.join(results_dir, stem + ".png")) else "-"
                lines.append(f"| {suite} | {'quick' if quick else 'full'} | {date} | {slug} | "
                             f"[{file_name}]({file_name}) | {data} | {plot} |")
    path = os.path.join(results_dir, "LATEST.md")
    write_text("\n".join(lines) + "\n", path)
    return path
