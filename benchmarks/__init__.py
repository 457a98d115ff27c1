"""genzoo's benchmark suite: speed and memory of NVAE's cells, whole training steps, versions
side by side and the paper-scale models on a GPU (benchmarks/README.md has the figures).

Every script is a module of this package, run from the repository root with ``python -m``, which
puts the root on the import path, so that each imports the shared harness the same way
(``from benchmarks.harness.measure import ...``) and no script edits ``sys.path``::

    python -m benchmarks.cells.bench_cells --channels 32
"""
