"""PNG plot of a suite's payload (matplotlib, Agg backend, imported only when plotting).

One panel per op. Bandwidth- and compute-bound ops show the fraction of their ceiling (higher is
better), latency ops the time (log scale, lower is better). Ops with a few rows get labelled bars;
long grids get one marker per grid point in table order, which stays readable at 600 rows.
"""

from bench.report import is_ok, rows_by_op
from bench.workloads import LATENCY

MAX_LABELLED_ROWS = 40
BAR_HEIGHT_INCHES = 0.12
GRID_PANEL_HEIGHT_INCHES = 4.0


def _value_of(row):
    if row["bound"] == LATENCY:
        return lambda result: result["time_us"]
    return lambda result: result.get("fraction_of_ceiling")


def _series(rows, name, value_of):
    """(row positions, values) of one implementation, over the rows where it ran."""
    positions, values = [], []
    for index, row in enumerate(rows):
        result = row["results"].get(name)
        if is_ok(result) and value_of(result) is not None:
            positions.append(index)
            values.append(value_of(result))
    return positions, values


def _labelled_bars(axis, rows, implementations, value_of):
    bar = 0.8 / len(implementations)
    for offset, name in enumerate(implementations):
        positions, values = _series(rows, name, value_of)
        if values:
            axis.barh([p + offset * bar for p in positions], values, height=bar, label=name)
    axis.set_yticks([i + 0.4 - bar / 2 for i in range(len(rows))])
    axis.set_yticklabels([row["label"] for row in rows], fontsize=7)
    axis.invert_yaxis()


def _grid_markers(axis, rows, implementations, value_of):
    for name in implementations:
        positions, values = _series(rows, name, value_of)
        if values:
            axis.plot(positions, values, marker=".", linestyle="none", markersize=4, label=name)
    axis.set_xlabel("grid point (in the order of the table)")


def _panel_height(rows, implementations):
    if len(rows) <= MAX_LABELLED_ROWS:
        return max(1.5, BAR_HEIGHT_INCHES * len(rows) * len(implementations) + 0.8)
    return GRID_PANEL_HEIGHT_INCHES


def plot_payload(payload, path):
    """Write the plot; returns None, or why no plot was written."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # plotting is optional; the table and JSON are the record
        return f"matplotlib not importable ({type(exc).__name__}: {exc})"

    groups = list(rows_by_op(payload["rows"]).items())
    if not groups:
        return "no rows to plot"
    implementations = {op: list(rows[0]["results"]) for op, rows in groups}
    heights = [_panel_height(rows, implementations[op]) for op, rows in groups]
    figure, axes = plt.subplots(len(groups), 1, figsize=(12, sum(heights) + 1.0),
                                gridspec_kw={"height_ratios": heights}, squeeze=False)
    for axis, (op, rows) in zip(axes[:, 0], groups):
        value_of = _value_of(rows[0])
        if len(rows) <= MAX_LABELLED_ROWS:
            _labelled_bars(axis, rows, implementations[op], value_of)
        else:
            _grid_markers(axis, rows, implementations[op], value_of)
        value_axis = "x" if len(rows) <= MAX_LABELLED_ROWS else "y"
        if rows[0]["bound"] == LATENCY:
            label = "time (us, log scale; lower is better)"
            (axis.set_xscale if value_axis == "x" else axis.set_yscale)("log")
        else:
            label = f"fraction of the {'copy' if rows[0]['bound'] == 'memory' else 'GEMM'} ceiling"
            (axis.axvline if value_axis == "x" else axis.axhline)(1.0, color="black", linewidth=0.8)
        (axis.set_xlabel if value_axis == "x" else axis.set_ylabel)(label)
        axis.set_title(op, fontsize=10)
        axis.grid(axis=value_axis, alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        else:
            axis.text(0.5, 0.5, "nothing measured (see the table)", transform=axis.transAxes, ha="center")
    meta = payload["meta"]
    figure.suptitle(f"fi_core {payload['suite']} suite - {meta.get('gpu', '?')} - {meta.get('date', '?')}")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return None
