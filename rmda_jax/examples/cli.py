"""``rmda-train``: one run (:mod:`rmda_jax.examples.train`), or a sweep of runs
trained as one program (:mod:`rmda_jax.examples.sweep`) when a flag of
``sweep.SWEEPABLE`` (``--lr``, ``--momentum``, ``--strength``,
``--l1-strength``, ``--seed``) takes a comma list.

Exit status: 0 on success, 2 on a problem the user can fix (one line on
stderr), 1 when ``--slim`` fails after a run was written, 130 when
interrupted.
"""

import sys

from rmda_jax.examples import config as config_lib
from rmda_jax.examples import data as data_lib
from rmda_jax.examples import sweep as sweep_lib
from rmda_jax.examples import train as train_lib


def main(argv=None) -> int:
  """The ``rmda-train`` command (see the module docstring)."""
  argv = sys.argv[1:] if argv is None else list(argv)
  sweep = sweep_lib.parse_sweep(argv)
  if len(sweep.runs) == 1:
    return train_lib.main(argv)
  train_lib.prepare_process(sweep.base)
  try:
    sweep_lib.train_sweep(sweep)
  except (data_lib.DatasetError, config_lib.UsageError) as e:
    print(f"rmda-train: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("rmda-train: interrupted (a sweep does not resume: run it again)",
          file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
