"""Low rank at accuracy: RMDA and ProxSGD with the nuclear norm on MNIST.

Issue 14. Models: the MLP of the RMDA paper (784-512-256-128-64-32-16-10) and
LeNet5 large (``rmda_jax.examples.models``). Regularizer:
``rj.nuclear_norm(lam)`` on every kernel (a conv kernel ``(kh, kw, in, out)``
viewed as the matrix ``(kh*kw*in, out)``); biases and BatchNorm parameters
are not regularized. Methods, both minimising
``mean loss + lam * sum_kernels ||W||_*``:

* ``rmda``      ``rj.rmda_multistep(lr, c0, milestones, gamma=0.1)`` ("divide"
                rule: c0 = 0.1 -> 1 at the first milestone); reported point:
                the exactly low-rank ``Z`` (``rj.structured_params``);
* ``prox_sgd``  the authors' ProxSGD (lr 0.1, rho 0.1, lam) in heavy-ball
                form, ``rj.prox_sgd(0.01, 0.9, rj.nuclear_norm(10 * lam))``,
                whose fixed points are those of ``f + lam * psi``; reported
                point: the iterate;
* ``msgd``      ``optax.sgd(0.01, momentum=0.9)``, no regularizer: the dense
                reference (its numerical ranks are reported too).

Every learning rate is multiplied by ``gamma = 0.1`` at the same milestones
(fractions of the run), where RMDA also restarts.

Reported per run (mean and sample std over the seeds): test accuracy at the
reported point, the total rank kept (``rj.rank_report``: singular values
above ``max(m, n) * eps(float32) * sigma_max``, numpy's ``matrix_rank``
tolerance) as a count and as a fraction of the total full rank, each kernel's
rank, and the parameters of the kernels stored as rank-r factors,
``sum min(m n, r (m + n)) / sum m n``. A lambda sweep for both methods (seed
0) gives the accuracy / rank trade-off (PNG). The experiment is
``benchmarks.sweep``'s.

The CPU budget: a fixed training subset and a few epochs (see ``settings``
in the JSON); the results are for this budget, not converged runs. The
lambdas (main 3e-2, sweep 1e-2 and 1e-1) come from 200-step calibration runs
on 12800 images: at 1e-2 and below neither method removes any rank in such a
budget (the dual-averaging anchor of RMDA is the random initialisation, whose
singular values the threshold must exceed); at 1e-1 about a quarter of the
rank goes.

Run from the repository root:

    python -m benchmarks.bench_low_rank                        # full (~40 min, 2 cores)
    python -m benchmarks.bench_low_rank --quick --out /tmp/q   # a few minutes
"""

from __future__ import annotations

import os

# jax's SVD on CPU is LAPACK from scipy's OpenBLAS; on a shared 2-core machine its
# threads thrash (one 784x512 SVD: 3 s with the default threads, 0.16 s with one,
# measured under load). Set before numpy / jax load OpenBLAS; recorded in the JSON.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys  # noqa: E402

import rmda_jax as rj  # noqa: E402
from benchmarks import common, sweep  # noqa: E402


def measure(params, reg) -> dict:
  """Total rank kept, its fraction, per-kernel ranks, factored size."""
  report = rj.rank_report(params, reg)
  dense = sum(r.matrix_shape[0] * r.matrix_shape[1] for r in report.rows)
  factored = sum(min(r.matrix_shape[0] * r.matrix_shape[1],
                     r.rank * (r.matrix_shape[0] + r.matrix_shape[1]))
                 for r in report.rows)
  return {
      "rank": report.rank,
      "full_rank": report.full_rank,
      "rank_fraction": report.rank_fraction,
      "factored_params_fraction": factored / dense if dense else 0.0,
      "layer_ranks": {r.path: [r.rank, r.full_rank] for r in report.rows},
      "kernel_sparsity": common.kernel_sparsity(params),
  }


def settings(args, epochs, data) -> dict:
  return {
      "regularizer": "rj.nuclear_norm(lam) on every kernel (ndim >= 2), conv kernels "
                     "as (kh*kw*in, out) matrices",
      "rank_tolerance": "singular values > max(m, n) * eps(float32) * sigma_max "
                        "(numpy.linalg.matrix_rank's default), float64 SVD",
  }


EXPERIMENT = sweep.Experiment(
    benchmark="bench_low_rank", stem="low_rank",
    models=("mlp", "lenet5_large"), quick_models=("mlp",),
    methods=("rmda", "prox_sgd", "msgd"), lam=3e-2, sweep_lams=(1e-2, 1e-1),
    regularizer=rj.nuclear_norm,
    measure=measure,
    measure_iterate=lambda params, reg: {"iterate_rank": rj.rank_report(params, reg).rank},
    describe=lambda row: (f"rank {row['rank']}/{row['full_rank']} "
                          f"({100 * row['rank_fraction']:.1f}%)  factored "
                          f"{100 * row['factored_params_fraction']:.1f}%"),
    metrics=("test_accuracy", "rank", "rank_fraction", "factored_params_fraction",
             "train_wall_s"),
    summary=(("rank_fraction", "rank kept %"),),
    regularizer_name="nuclear_norm", settings=settings,
    msgd_note="no regularizer: the dense reference",
    x_metric="rank_fraction", x_label="total rank kept (% of full rank)",
    title="MNIST, nuclear norm on every kernel",
    carry=("full_rank",),
)


def main(argv=None) -> int:
  return sweep.main(EXPERIMENT, argv, __doc__.split("\n")[0])


if __name__ == "__main__":
  sys.exit(main())
