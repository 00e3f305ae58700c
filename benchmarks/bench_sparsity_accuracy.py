"""Structured sparsity at accuracy: RMDA and its peers with group LASSO on MNIST.

Issue 5, section 2. Models: LeNet5 small, LeNet5 large and the MLP of the
RMDA paper (``rmda_jax.examples.models``). Regularizer: ``rj.group_lasso(lam)``
with input-unit groups (the authors' grouping), kernels only. Methods, all
minimising ``mean loss + lam * sum_g sqrt(|g|) ||W_g||``:

* ``rmda``      ``rj.rmda_multistep(lr, c0, milestones, gamma=0.1)``; reported
                point: the exactly structured ``Z`` (``rj.structured_params``);
* ``prox_sgd``  ``rj.prox_sgd(0.01, 0.9, rj.group_lasso(10 * lam))``: the
                authors' ProxSGD (lr 0.1, rho 0.1, lam) in heavy-ball form,
                whose fixed points are those of ``f + lam * psi`` (see the
                ``prox_sgd`` docstring);
* ``prox_adam`` (ProxGen) and ``prox_ssi``: lr 1e-3, strength ``lam``;
* ``msgd``      ``optax.sgd(0.01, momentum=0.9)``, no regulariser: the dense
                reference (= the authors' SGD-EMA form at lr 0.1, rho 0.1).

Every learning rate is multiplied by ``gamma = 0.1`` at the same milestones
(fractions of the run); RMDA's ``c`` follows the ICLR 2022 "divide" rule
(c0 = 0.1 -> 1 at the first milestone), so its last stages run with c = 1.

Reported per run: test accuracy, group sparsity and weighted group sparsity
(``rj.group_sparsity(..., weighted=True)``) of the reported point, plus the
unstructured sparsity of the kernels; mean and spread (sample std) over the
seeds. A lambda sweep for RMDA and ProxSGD gives the accuracy / weighted group
sparsity trade-off (PNG). The experiment is ``benchmarks.sweep``'s.

The CPU budget: the settings of shared/docs/rmda.md are scaled down (a fixed
training subset, a few epochs; see ``settings`` in the JSON). The results are
for this budget, not the papers' converged runs.

Run from the repository root:

    python -m benchmarks.bench_sparsity_accuracy                        # full (~40 min, 2 cores)
    python -m benchmarks.bench_sparsity_accuracy --quick --out /tmp/q   # < 2 min
"""

from __future__ import annotations

import sys

import rmda_jax as rj
from benchmarks import common, sweep


def measure(params, reg) -> dict:
  return {
      "group_sparsity": rj.group_sparsity(params, reg),
      "weighted_group_sparsity": rj.group_sparsity(params, reg, weighted=True),
      "kernel_sparsity": common.kernel_sparsity(params),
      "sparsity_all_params": rj.sparsity(params),
  }


def settings(args, epochs, data) -> dict:
  return {
      "regularizer": "rj.group_lasso(lam, groups='input') on kernels (ndim >= 2)",
      "scaled_from": "shared/docs/rmda.md section 5 (e.g. MNIST logistic regression: 200 "
                     "epochs, milestones 50, 100, lr 0.1, c0 0.01, lam 1e-3); "
                     f"here {epochs} epochs on {data.note.split(';')[0]} to fit the 2-core "
                     "CPU budget",
  }


EXPERIMENT = sweep.Experiment(
    benchmark="bench_sparsity_accuracy", stem="sparsity_accuracy",
    models=("lenet5_small", "lenet5_large", "mlp"), quick_models=("lenet5_small", "mlp"),
    methods=common.METHODS, lam=3e-3, sweep_lams=(1e-3, 6e-3, 1e-2),
    regularizer=lambda lam: rj.group_lasso(lam, groups="input"),
    measure=measure,
    measure_iterate=lambda params, reg: {
        "iterate_weighted_group_sparsity": rj.group_sparsity(params, reg, weighted=True)},
    describe=lambda row: (f"group sp {100 * row['group_sparsity']:.1f}%  "
                          f"weighted {100 * row['weighted_group_sparsity']:.1f}%"),
    metrics=("test_accuracy", "group_sparsity", "weighted_group_sparsity", "kernel_sparsity",
             "train_wall_s"),
    summary=(("group_sparsity", "group sp %"), ("weighted_group_sparsity", "weighted %")),
    regularizer_name="group_lasso", settings=settings,
    msgd_note="no regulariser: the dense reference; lr 0.1 (heavy-ball) diverged on LeNet5 "
              "in a 100-step check",
    x_metric="weighted_group_sparsity", x_label="weighted group sparsity (%)",
    title="MNIST, group LASSO (input groups)",
)


def main(argv=None) -> int:
  return sweep.main(EXPERIMENT, argv, __doc__.split("\n")[0])


if __name__ == "__main__":
  sys.exit(main())
