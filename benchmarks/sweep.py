"""The lambda sweep of the accuracy-at-structure benchmarks.

``bench_sparsity_accuracy`` (group LASSO: accuracy against group sparsity) and
``bench_low_rank`` (nuclear norm: accuracy against rank) are one experiment with
another regularizer and another measure of structure: every method at the main
lambda on every seed (the table), RMDA and ProxSGD at more lambdas on seed 0
(the sweep), the results JSON rewritten after every run, and a PNG of test
accuracy against the structure measure. An :class:`Experiment` names what
differs; :func:`main` runs it with the flags of ``common.add_training_args``
and these: ``--methods``, ``--lam``, ``--sweep-lams``, ``--prox-sgd-lr``,
``--adam-lr`` (when ProxGen or ProxSSI is a method) and ``--plot-only``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from matplotlib.figure import Figure

from benchmarks import common

SWEEP_METHODS = ("rmda", "prox_sgd")
KEYS = ("model", "method", "lam")
COLORS = {"rmda": "C0", "prox_sgd": "C1", "prox_adam": "C2", "prox_ssi": "C3", "msgd": "k"}


@dataclasses.dataclass(frozen=True)
class Experiment:
  """What one sweep benchmark sets: its models, methods, regularizer and measures."""
  benchmark: str                 # the results' "benchmark"
  stem: str                      # results file stem; "<stem>_quick" in --quick mode
  models: Sequence[str]
  quick_models: Sequence[str]
  methods: Sequence[str]
  lam: float                     # default lambda of the main table
  sweep_lams: Sequence[float]    # default extra lambdas of the sweep (full mode)
  regularizer: Callable[[float], Any]          # lam -> regularizer (msgd: for its measures)
  measure: Callable[[Any, Any], dict]          # (reported point, regularizer) -> row fields
  measure_iterate: Callable[[Any, Any], dict]  # (RMDA's iterate W, regularizer) -> row fields
  describe: Callable[[dict], str]              # a run's row -> the log's words on it
  metrics: Sequence[str]         # row fields aggregated (mean, std) in the table and sweep
  summary: Sequence[tuple]       # (metric, header) of the final log table, test accuracy aside
  regularizer_name: str          # the rj function of ``regularizer``, for the settings
  settings: Callable[..., dict]  # (args, epochs, data) -> its settings (regularizer first)
  msgd_note: str                 # the settings' words on the dense reference
  x_metric: str                  # the plot's structure measure (a fraction)
  x_label: str
  title: str                     # the plot's first words: data and regularizer
  carry: Sequence[str] = ()      # row fields copied into the table from a group's first run
  extra: dict = dataclasses.field(default_factory=dict)  # more top-level results keys


def plot(exp: Experiment, sweep_rows, table_rows, path: Path, machine: dict,
         settings: dict) -> None:
  """Test accuracy against ``exp.x_metric``: the sweep as lines, the table as error bars."""
  models = sorted({r["model"] for r in sweep_rows + table_rows},
                  key=lambda m: list(exp.models).index(m) if m in exp.models else 99)
  if not models:
    return
  fig = Figure(figsize=(5 * len(models), 4.2))
  axes = fig.subplots(1, len(models), squeeze=False)
  for ax, model in zip(axes[0], models):
    for method in SWEEP_METHODS:
      rows = sorted((r for r in sweep_rows if r["model"] == model and r["method"] == method),
                    key=lambda r: r["lam"])
      if not rows:
        continue
      xs = [100 * r[exp.x_metric]["mean"] for r in rows]
      ys = [100 * r["test_accuracy"]["mean"] for r in rows]
      ax.plot(xs, ys, "o-", color=COLORS[method], label=f"{method} (lambda sweep)")
      for r, x, y in zip(rows, xs, ys):
        ax.annotate(f"{r['lam']:.0e}", (x, y), fontsize=7, textcoords="offset points",
                    xytext=(3, 3))
    for r in table_rows:
      if r["model"] != model:
        continue
      ax.errorbar(100 * r[exp.x_metric]["mean"], 100 * r["test_accuracy"]["mean"],
                  yerr=100 * r["test_accuracy"]["std"], fmt="s",
                  color=COLORS.get(r["method"], "gray"), mfc="none",
                  label=(f"{r['method']} (lambda {r['lam']:.0e}, {r['test_accuracy']['n']} "
                         "seeds)") if r["method"] != "msgd" else "msgd (dense)")
    ax.set_title(model)
    ax.set_xlabel(exp.x_label)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(
      f"{exp.title}, {settings['epochs']} epochs on "
      f"{settings['data']}\n{machine['cpu']} ({machine['cpu_count']} cores), jax "
      f"{machine['jax']}, optax {machine['optax']}, {machine['date'][:10]}", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def _method_settings(exp: Experiment, args, rates: common.Rates) -> dict:
  """What the results record of each method's settings (see ``common.build_method``)."""
  settings = {
      "rmda": {"lr": args.rmda_lr, "c0": args.rmda_c0, "momentum_rule": "divide",
               "reported_point": "Z = rj.structured_params(opt_state, reg)"},
      "prox_sgd": {"authors_form": {"lr": args.prox_sgd_lr, "rho": rates.prox_sgd_rho,
                                    "lam": "lam"},
                   "run_as": f"rj.prox_sgd(0.1*lr, momentum=0.9, "
                             f"{exp.regularizer_name}(lam/0.1))",
                   "reported_point": "iterate W"},
      "prox_adam": {"lr": rates.adam_lr, "b1": 0.9, "b2": 0.999, "max_inner_steps": 100,
                    "reported_point": "iterate W"},
      "prox_ssi": {"lr": rates.adam_lr, "reported_point": "iterate W"},
      "msgd": {"lr": args.msgd_lr, "momentum": 0.9, "weight_decay": 0, "note": exp.msgd_note},
  }
  return {m: settings[m] for m in exp.methods}


def _parser(exp: Experiment, description: str) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=description)
  common.add_training_args(p, exp.models)
  p.add_argument("--methods", nargs="+", default=None, choices=exp.methods)
  p.add_argument("--lam", type=float, default=None, help="lambda of the main table")
  p.add_argument("--sweep-lams", type=float, nargs="*", default=None,
                 help="extra lambdas for the RMDA / ProxSGD sweep (seed 0)")
  p.add_argument("--prox-sgd-lr", type=float, default=0.1,
                 help="the authors' (EMA-form) ProxSGD lr; run as heavy-ball 0.1x this")
  if {"prox_adam", "prox_ssi"} & set(exp.methods):
    p.add_argument("--adam-lr", type=float, default=1e-3)
  p.add_argument("--plot-only", type=Path, default=None,
                 help="only redraw the PNG of an existing (possibly partial) results JSON")
  return p


def main(exp: Experiment, argv=None, description: str = "") -> int:
  """Runs ``exp`` as its command line ``argv`` asks; writes ``<stem>.json`` and ``.png``."""
  args = _parser(exp, description).parse_args(argv)
  common.cpu_speed_flags()  # as rmda-train; before the first JAX computation
  if args.plot_only is not None:
    d = json.loads(args.plot_only.read_text())
    png = args.plot_only.with_suffix(".png")
    plot(exp, d["sweep"], d["table"], png, d["machine"], d["settings"])
    print(f"wrote {png}" + ("" if d.get("complete") else " (from a partial run)"))
    return 0

  q = args.quick
  models = args.models or (exp.quick_models if q else exp.models)
  methods = args.methods or exp.methods
  b = common.budget(args)
  seeds, epochs = b.seeds, b.epochs
  lam = args.lam if args.lam is not None else exp.lam
  sweep_lams = args.sweep_lams if args.sweep_lams is not None else (
      [] if q else list(exp.sweep_lams))
  stem = args.name or (f"{exp.stem}_quick" if q else exp.stem)
  args.out.mkdir(parents=True, exist_ok=True)
  json_path, png_path = args.out / f"{stem}.json", args.out / f"{stem}.png"

  t_start = time.perf_counter()
  machine = common.machine_info()
  machine["load_average_start"] = common.load_average()
  data = common.load_data(args.dataset, b.train_subset, b.test_subset)
  spe = common.steps_per_epoch(data, args.batch_size)
  total_steps = spe * epochs
  rates = common.Rates(common.milestones_of(total_steps, args.milestone_fractions),
                       gamma=args.gamma, rmda_lr=args.rmda_lr, rmda_c0=args.rmda_c0,
                       prox_sgd_lr=args.prox_sgd_lr,
                       adam_lr=getattr(args, "adam_lr", common.Rates.adam_lr),
                       msgd_lr=args.msgd_lr)
  settings = {
      "data": data.note, "dataset": args.dataset, "epochs": epochs,
      "batch_size": args.batch_size, "steps_per_epoch": spe, "total_steps": total_steps,
      "milestones_fraction_of_steps": list(args.milestone_fractions),
      "milestones_steps": list(rates.milestones),
      "gamma": args.gamma, "seeds": list(range(seeds)), "lam_main": lam,
      "sweep_lams": sweep_lams, "sweep_seeds": [0],
      **exp.settings(args, epochs, data),
      **_method_settings(exp, args, rates),
      "lr_schedule": "every method's lr x gamma at each milestone; RMDA restarts there",
      "test_set": ("MNIST test set" if b.test_subset is None
                   else f"first {b.test_subset} test images"),
      "train_wall_s_note": "per run: training + computing the reported point; the first "
                           "seed of each (model, method, lam) includes jit compilation",
  }
  result = {"benchmark": exp.benchmark, "quick": q, "machine": machine,
            "settings": settings, **exp.extra, "runs": [], "table": [], "sweep": [],
            "wall_s": None, "complete": False}

  def save():
    result["wall_s"] = time.perf_counter() - t_start
    main_runs = [r for r in result["runs"] if r["lam"] == lam or r["method"] == "msgd"]
    result["table"] = common.aggregate(main_runs, KEYS, exp.metrics, exp.carry)
    # Seed 0 of every lambda (the main lambda's seed 0 included).
    sweep_runs = [r for r in result["runs"] if r["method"] in SWEEP_METHODS and r["seed"] == 0]
    result["sweep"] = common.aggregate(sweep_runs, KEYS, exp.metrics, exp.carry)
    common.write_json(json_path, result)

  log = lambda s: print(s, flush=True)
  log(f"{data.note}; {total_steps} steps per run; methods {list(methods)}")

  # The main table, then the sweep (seed 0 only).
  jobs = [(model, method, lam, list(range(seeds))) for model in models for method in methods]
  jobs += [(model, method, sl, [0]) for model in models for method in SWEEP_METHODS
           if method in methods for sl in sweep_lams if sl != lam]
  for model, method, lam_j, job_seeds in jobs:
    reg = exp.regularizer(lam_j)  # msgd runs without it; its measures use it
    tx, reported = common.build_method(method, reg, rates)
    run = common.make_run(model, tx, data, batch_size=args.batch_size)
    for seed in job_seeds:
      r = run(epochs=epochs, seed=seed, reported=reported)
      # msgd has no regulariser; it is filed under the main lambda (its table row).
      row = {"model": model, "method": method, "lam": lam_j,
             "seed": seed, "test_accuracy": r.test_accuracy, "test_loss": r.test_loss,
             "train_loss_last_epoch": r.train_loss_last_epoch, "train_wall_s": r.wall_s,
             "steps": r.steps, **exp.measure(r.reported, reg)}
      if method == "rmda":
        row.update(exp.measure_iterate(r.params, reg))
      result["runs"].append(row)
      log(f"  {model:13s} {method:9s} lam {lam_j:.0e} seed {seed}: acc "
          f"{100 * r.test_accuracy:.2f}%  {exp.describe(row)}  ({r.wall_s:.1f}s)")
      save()

  result["complete"] = True
  save()
  plot(exp, result["sweep"], result["table"], png_path, machine, settings)
  result["plot"] = png_path.name
  save()
  log("")
  log(f"{'model':13s} {'method':9s} {'lambda':>7s} {'test acc %':>14s} "
      + " ".join(f"{head:>12s}" for _, head in exp.summary))
  for r in result["table"]:
    a = r["test_accuracy"]
    log(f"{r['model']:13s} {r['method']:9s} {r['lam']:7.0e} "
        f"{100 * a['mean']:7.2f}+-{100 * a['std']:5.2f} "
        + " ".join(f"{100 * r[m]['mean']:6.1f}+-{100 * r[m]['std']:4.1f}" for m, _ in exp.summary))
  log(f"wrote {json_path} and {png_path} ({result['wall_s']:.0f}s)")
  return 0
