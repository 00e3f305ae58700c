"""The benchmarks of rmda_jax: one module per benchmark, run from the repository root.

    python -m benchmarks.bench_identification --quick --out /tmp/ident
    python -m benchmarks.render            # benchmarks/results/*.json -> README tables

``benchmarks.common`` holds what several benchmarks share (machine record,
optimizer tables, model shapes, step timing, data and the training loop);
``benchmarks.sweep`` the lambda-sweep experiment of ``bench_sparsity_accuracy``
and ``bench_low_rank``; ``benchmarks.rigl`` the RigL optimizer that
``bench_rigl`` compares with.
"""
