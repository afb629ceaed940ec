"""fi_core benchmark harness: ceilings, fi_core and its peers measured side by side.

Run from the repository root: `python -m bench --suite decode --quick`.

Modules:
  workloads   grids of every suite, FLOP/byte counting, memory footprints (pure Python)
  peers       which libraries/ops are importable and why not (pure Python)
  report      derived figures, markdown table, JSON, file names, LATEST.md (pure Python)
  plot        PNG plot (matplotlib, imported only when plotting)
  gpu_runner  timing on the GPU (torch, fi_core, flashinfer; imported only with a GPU)
"""
