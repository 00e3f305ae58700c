#!/usr/bin/env bash
# Issue 10, parts 2 and 3 (bench_equal_tuning, bench_rigl_converged) with several
# processes sharing one device (benchmarks/sharded.py): the tuning stages, then
# the lambda sweep and the final runs, then the results files rebuilt from the
# per-run files. Finished runs are skipped, so it can be rerun after a cut.
#
#   benchmarks/run_deep_sharded.sh                       # the long runs (a GPU)
#   benchmarks/run_deep_sharded.sh --quick --out /tmp/q  # the pipeline, in seconds
#
# Shard counts: RT/RF (rigl_converged tune/final units), ET/ES (equal_tuning).
set -u
RT=${RT:-6} ET=${ET:-12} RF=${RF:-10} ES=${ES:-8}
extra="$*"
logs="--logs ${LOGS:-benchmarks/results/logs}"
${PYTHON:-python} -m benchmarks.sharded $logs "$RT:bench_rigl_converged --stage tune $extra" \
                             "$ET:bench_equal_tuning --stage tune $extra"
${PYTHON:-python} -m benchmarks.sharded $logs "$RF:bench_rigl_converged --stage final $extra" \
                             "$ES:bench_equal_tuning --stage sweep $extra"
${PYTHON:-python} -m benchmarks.bench_rigl_converged --merge-only $extra | tail -n 5
${PYTHON:-python} -m benchmarks.bench_equal_tuning --merge-only $extra | tail -n 2
