"""Command-line configuration of ``rmda-train``: the flags, their checks, defaults.

Bad values are refused by :class:`Config` itself (:class:`ConfigError` naming
the field), whether it is built in Python or by :func:`parse_args`, which
reports them as usage errors naming the flag (exit status 2, one line on
stderr).
The defaults are a short run that finishes in minutes on a laptop CPU:
LeNet5 (small) on MNIST, group LASSO (lambda 5e-4) on input units, RMDA with
the authors' stage-wise schedule: lr 0.3 and c 0.1 for epochs 1-3, then
lr 0.03 and c = 1 (W = Z) after a restart, lr 0.003 from epoch 6 (what it
reaches: the README's "Use it" section).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os

from rmda_jax.examples.data import DATASETS
from rmda_jax.examples.models import MODELS
from rmda_jax.examples.models import TRANSFORMERS

# How a sweep's program holds its runs (rmda_jax/examples/sweep.py: over_runs).
BATCHINGS = ("auto", "vmap", "unroll")
# RAMDA's subproblem solvers (rj.ramda's inner_solver): the authors' warm-started
# proximal gradient, or Newton's method per group (exact).
INNER_SOLVERS = ("pg", "newton")
OPTIMIZERS = ("rmda", "ramda", "prox_sgd", "prox_adam", "prox_ssi", "sgd", "madgrad")
REGULARIZERS = ("group_lasso", "l1", "nuclear", "sparse_group_lasso", "heads_and_neurons",
                "none")

# Per-optimizer defaults used where the flag is not given (None). prox_sgd's
# 0.01 with momentum 0.9 is the authors' ProxSGD (EMA form, lr 0.1, rho 0.1).
DEFAULT_LR = {"rmda": 0.3, "ramda": 1e-2, "prox_sgd": 0.01, "prox_adam": 1e-3,
              "prox_ssi": 1e-3, "sgd": 0.1, "madgrad": 1e-2}
# ramda: the RAMDA authors' defaults (lr 1e-2, c 1e-2; epsilon 1e-6 is rj.ramda's).
DEFAULT_MOMENTUM = {"rmda": 0.1, "ramda": 1e-2, "prox_sgd": None, "prox_adam": None,
                    "prox_ssi": None, "sgd": 0.9, "madgrad": 0.9}


class UsageError(ValueError):
  """A configuration that passed the flag checks but cannot run on its data."""


@dataclasses.dataclass(frozen=True)
class Config:
  model: str = "lenet5_small"
  dataset: str = "mnist"
  data_dir: str | None = None
  optimizer: str = "rmda"
  regularizer: str = "group_lasso"
  strength: float = 5e-4
  l1_strength: float | None = None  # sparse_group_lasso only: lambda of its L1 term
  groups: str = "input"
  inner_solver: str | None = None  # ramda only: "pg" (the authors') or "newton"
  lr: float | None = None
  momentum: float | None = None
  epochs: int = 6
  milestones: tuple[int, ...] = (3, 5)
  gamma: float = 0.1
  batch_size: int = 128
  seed: int = 0
  output_dir: str = "runs/default"
  weight_decay: float = 0.0
  plot: bool = False
  slim: bool = False
  resume: bool = False
  progress: bool = True
  ynn_fusions: bool = False
  offline: bool = False
  # Sweeps (comma lists, rmda_jax/examples/sweep.py); not in the fingerprint.
  runs_per_program: int | None = None
  batching: str = "auto"
  # Devices and hosts (rmda_jax/examples/sharding.py); not in the fingerprint:
  # a run may resume on another mesh.
  mesh: str | None = None
  coordinator: str | None = None
  num_processes: int | None = None
  process_id: int | None = None

  def __post_init__(self):
    validate(self)

  @property
  def learning_rate(self) -> float:
    return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr

  @property
  def momentum_value(self) -> float | None:
    return DEFAULT_MOMENTUM[self.optimizer] if self.momentum is None else self.momentum

  def fingerprint_fields(self) -> dict:
    """What determines the checkpointed state (epochs may grow on resume)."""
    fields = {
        "model": self.model, "dataset": self.dataset, "optimizer": self.optimizer,
        "regularizer": self.regularizer, "strength": self.strength, "groups": self.groups,
        "lr": self.learning_rate, "momentum": self.momentum_value,
        "milestones": list(self.milestones), "gamma": self.gamma,
        "batch_size": self.batch_size, "seed": self.seed, "weight_decay": self.weight_decay,
    }
    if self.regularizer == "sparse_group_lasso":  # other runs keep their fingerprints
      fields["l1_strength"] = self.l1_strength
    if self.inner_solver not in (None, "pg"):  # RAMDA's default solver: as before
      fields["inner_solver"] = self.inner_solver
    return fields

  def fingerprint(self) -> str:
    blob = json.dumps(self.fingerprint_fields(), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------
# Value checks, one place: Config.__post_init__ runs them on every Config (built
# in Python or by parse_args); the flags' argparse types use the same rules.


class ConfigError(UsageError):
  """A :class:`Config` field holds a value the run cannot take.

  Attributes:
    field: the field's name (``"momentum"``); its flag is ``flag_of(field)``.
    reason: what is wrong, without the field's name.
  """

  def __init__(self, field: str, reason: str):
    super().__init__(f"Config.{field}: {reason}")
    self.field = field
    self.reason = reason


def flag_of(field: str) -> str:
  """The command-line flag that sets ``field`` (``batch_size`` -> ``--batch-size``)."""
  return "--no-progress" if field == "progress" else "--" + field.replace("_", "-")


# field: (number type, test, requirement); None is also allowed for _OPTIONAL ones.
_RANGES = {
    "strength": (float, lambda v: v >= 0, "must be >= 0"),
    "l1_strength": (float, lambda v: v >= 0, "must be >= 0"),
    "lr": (float, lambda v: v > 0, "must be > 0"),
    "momentum": (float, lambda v: 0 <= v <= 1, "must lie in [0, 1]"),
    "epochs": (int, lambda v: v > 0, "must be a positive integer"),
    "gamma": (float, lambda v: v > 0, "must be > 0"),
    "batch_size": (int, lambda v: v > 0, "must be a positive integer"),
    "seed": (int, lambda v: v >= 0, "must be an integer >= 0"),
    "weight_decay": (float, lambda v: v >= 0, "must be >= 0"),
    "num_processes": (int, lambda v: v > 0, "must be a positive integer"),
    "runs_per_program": (int, lambda v: v > 0, "must be a positive integer"),
    "process_id": (int, lambda v: v >= 0, "must be an integer >= 0"),
}
_OPTIONAL = ("l1_strength", "lr", "momentum", "num_processes", "process_id",
             "runs_per_program")
_CHOICES = {"model": lambda: sorted(MODELS), "dataset": lambda: list(DATASETS),
            "optimizer": lambda: list(OPTIMIZERS), "regularizer": lambda: list(REGULARIZERS),
            "batching": lambda: list(BATCHINGS),
            "inner_solver": lambda: [None, *INNER_SOLVERS]}
_SWITCHES = ("plot", "slim", "resume", "progress", "ynn_fusions", "offline")
_PATHS = ("data_dir", "output_dir")  # str or os.PathLike (kept as str); data_dir may be None
_STRINGS = ("mesh", "coordinator")   # str or None


def _range_error(field: str, v) -> str | None:
  """Why ``v`` cannot be ``field``'s value (a number of its kind, in range), or None."""
  kind, ok, requirement = _RANGES[field]
  if isinstance(v, bool) or not isinstance(v, (int, float) if kind is float else int):
    return f"must be {'a number' if kind is float else 'an integer'}, got {v!r}"
  if isinstance(v, float) and not math.isfinite(v):
    return f"must be finite, got {v!r}"
  return None if ok(v) else f"{requirement}, got {v}"


def _check_milestones(ms) -> tuple[int, ...]:
  if not isinstance(ms, (tuple, list)) or any(
      isinstance(m, bool) or not isinstance(m, int) for m in ms):
    raise ConfigError("milestones", f"must be a tuple of epochs (ints), got {ms!r}")
  if any(m <= 0 for m in ms) or list(ms) != sorted(set(ms)):
    raise ConfigError("milestones", f"must be increasing positive epochs, got {list(ms)}")
  return tuple(ms)


def _check_groups(groups) -> str:
  if groups in ("input", "output"):
    return groups
  if isinstance(groups, int) and not isinstance(groups, bool):
    return str(groups)
  if isinstance(groups, str):
    try:
      return str(int(groups))
    except ValueError:
      pass
  raise ConfigError("groups", f"must be 'input', 'output' or a kernel axis, got {groups!r}")


def validate(cfg: Config) -> None:
  """Raises :class:`ConfigError` naming the first field of ``cfg`` the run cannot take.

  Normalises in place (the dataclass is frozen; this runs in ``__post_init__``):
  ``milestones`` becomes a tuple, ``groups`` an axis as a string, a path a string.
  """
  for field, choices in _CHOICES.items():
    if getattr(cfg, field) not in choices():
      raise ConfigError(field, f"must be one of {', '.join(map(str, choices()))}; "
                               f"got {getattr(cfg, field)!r}")
  for field in _RANGES:
    v = getattr(cfg, field)
    if v is None and field in _OPTIONAL:
      continue
    why = _range_error(field, v)
    if why:
      raise ConfigError(field, why)
  for field in _SWITCHES:
    if not isinstance(getattr(cfg, field), bool):
      raise ConfigError(field, f"must be True or False, got {getattr(cfg, field)!r}")
  for field in _PATHS:
    v = getattr(cfg, field)
    if isinstance(v, os.PathLike):
      object.__setattr__(cfg, field, os.fspath(v))
    elif not (isinstance(v, str) or (v is None and field == "data_dir")):
      raise ConfigError(field, f"must be a path (str or os.PathLike), got {v!r}")
  for field in _STRINGS:
    v = getattr(cfg, field)
    if not (v is None or isinstance(v, str)):
      raise ConfigError(field, f"must be a string or None, got {v!r}")
  object.__setattr__(cfg, "milestones", _check_milestones(cfg.milestones))
  object.__setattr__(cfg, "groups", _check_groups(cfg.groups))

  m = cfg.momentum
  if m is not None:
    if cfg.optimizer in ("prox_adam", "prox_ssi"):  # Adam-type: no such knob
      raise ConfigError("momentum", f"{cfg.optimizer} takes no momentum")
    if cfg.optimizer in ("rmda", "ramda") and not 0 < m <= 1:
      raise ConfigError("momentum", f"{cfg.optimizer} needs c in (0, 1], got {m}")
    if cfg.optimizer not in ("rmda", "ramda") and not 0 <= m < 1:
      raise ConfigError("momentum", f"{cfg.optimizer} needs momentum in [0, 1), got {m}")
  if cfg.regularizer != "none" and cfg.strength == 0:
    raise ConfigError("strength", "must be > 0 (use --regularizer none for no regularizer)")
  if cfg.regularizer == "sparse_group_lasso":
    if not cfg.l1_strength:
      raise ConfigError("l1_strength", "sparse_group_lasso needs --l1-strength > 0 (the "
                                       "lambda of its L1 term; --strength is that of its "
                                       "group term)")
  elif cfg.l1_strength is not None:
    raise ConfigError("l1_strength", "only for --regularizer sparse_group_lasso")
  if cfg.regularizer == "heads_and_neurons" and cfg.model not in TRANSFORMERS:
    raise ConfigError("regularizer", "heads_and_neurons groups the attention heads and MLP "
                                     f"units of a transformer ({', '.join(sorted(TRANSFORMERS))}"
                                     f"), not of --model {cfg.model}")
  if cfg.inner_solver is not None and cfg.optimizer != "ramda":
    raise ConfigError("inner_solver", "only for --optimizer ramda (its subproblem solver)")
  if cfg.inner_solver == "newton" and cfg.regularizer == "nuclear":
    raise ConfigError("inner_solver", "newton solves per group and has nothing for the "
                                      "nuclear norm; use pg")
  if cfg.regularizer == "nuclear" and cfg.optimizer == "prox_ssi":
    raise ConfigError("optimizer", "prox_ssi's Newton solver is per group and has nothing "
                                   "for the nuclear norm; use prox_adam (ProxGen)")


# argparse types: each raises ArgumentTypeError -> one-line usage error.


def _number(kind, text, what):
  try:
    v = kind(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
  if isinstance(v, float) and not math.isfinite(v):
    raise argparse.ArgumentTypeError(f"{what} must be finite, got {text!r}")
  return v


def _flag_type(field):
  """The argparse type of ``field``'s flag: the number, checked as :func:`validate` does."""
  kind = _RANGES[field][0]

  def parse(text):
    v = _number(kind, text, "value")
    why = _range_error(field, v)
    if why:
      raise argparse.ArgumentTypeError(why)
    return v
  parse.__name__ = field  # argparse names the type in "invalid <name> value"
  return parse


def milestone_list(text):
  """``"3,5"`` -> (3, 5); ``""`` or ``"none"`` -> ()."""
  if text.strip().lower() in ("", "none"):
    return ()
  try:
    ms = tuple(int(t) for t in text.replace(" ", "").split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"milestones are comma-separated epochs like 3,5; got {text!r}") from None
  try:
    return _check_milestones(ms)
  except ConfigError as e:
    raise argparse.ArgumentTypeError(e.reason) from None


def groups_value(text):
  try:
    return _check_groups(text)
  except ConfigError as e:
    raise argparse.ArgumentTypeError(e.reason) from None


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
  """Shows each flag's default, except for on/off switches (their default is "off"),
  flags without one (None) and flags whose help states it."""

  def _get_help_string(self, action):
    if action.nargs == 0 or action.default is None or "(default" in action.help:
      return action.help
    return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
  d = Config()
  p = argparse.ArgumentParser(
      prog="rmda-train",
      description="Train a structured-sparse network with RMDA (or a baseline) in JAX.",
      formatter_class=_HelpFormatter)
  p.add_argument("--model", choices=sorted(MODELS), default=d.model,
                 help="network to train (rmda_jax/examples/models.py)")
  p.add_argument("--dataset", choices=DATASETS, default=d.dataset,
                 help="mnist is fetched once into the cache unless --data-dir or --offline; "
                      "digits ships with scikit-learn; cifar10/100 need --data-dir")
  p.add_argument("--data-dir", default=d.data_dir,
                 help="where the dataset files are (MNIST: IDX files or mnist.npz; "
                      "CIFAR: the python .tar.gz or its extracted folder)")
  p.add_argument("--offline", action="store_true",
                 help="never use the network: read MNIST from --data-dir or the cache only "
                      "(also set by RMDA_JAX_OFFLINE=1)")
  p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer,
                 help="rmda, a proximal baseline, or sgd/madgrad with psi in the loss")
  p.add_argument("--regularizer", choices=REGULARIZERS, default=d.regularizer,
                 help="psi: group LASSO over --groups, L1, the nuclear norm of every "
                      "kernel (low rank), sparse group LASSO (L1 + group LASSO), "
                      "heads_and_neurons (group LASSO over a transformer's attention heads "
                      "and MLP hidden units, rj.head_and_neuron_lasso; --model vit_tiny), "
                      "or none")
  p.add_argument("--strength", type=_flag_type("strength"), default=d.strength,
                 help="lambda of the regularizer (sparse_group_lasso: of its group term)")
  p.add_argument("--l1-strength", type=_flag_type("l1_strength"), default=d.l1_strength,
                 help="sparse_group_lasso only, required: lambda of its L1 term")
  p.add_argument("--groups", type=groups_value, default=d.groups,
                 help="group LASSO groups: input (kernel axis -2), output (-1) or an axis")
  p.add_argument("--inner-solver", choices=INNER_SOLVERS, default=None,
                 help="ramda only: its subproblem solver, pg (the authors' warm-started "
                      "proximal gradient; the default) or newton (exact per group, "
                      "cheaper on large models; see rj.ramda)")
  p.add_argument("--lr", type=_flag_type("lr"), default=None,
                 help=f"learning rate (default per optimizer: {DEFAULT_LR})")
  p.add_argument("--momentum", type=_flag_type("momentum"), default=None,
                 help="rmda, ramda: the averaging weight c in (0, 1]; others: momentum "
                      "in [0, 1) "
                      f"(default per optimizer: {DEFAULT_MOMENTUM})")
  p.add_argument("--epochs", type=_flag_type("epochs"), default=d.epochs,
                 help="passes over the training set (with --resume: the total to reach)")
  p.add_argument("--milestones", type=milestone_list, default=d.milestones,
                 help="comma-separated epochs at which lr *= gamma (rmda also restarts "
                      "and sets c = min(c / gamma, 1); ramda restarts, epsilon *= gamma, "
                      "and c ramps to 1 after the last); 'none' for a constant schedule "
                      f"(default: {','.join(map(str, d.milestones))})")
  p.add_argument("--gamma", type=_flag_type("gamma"), default=d.gamma,
                 help="factor applied to the learning rate at each milestone")
  p.add_argument("--batch-size", type=_flag_type("batch_size"), default=d.batch_size,
                 help="samples per update (the last partial batch of an epoch is dropped)")
  p.add_argument("--seed", type=_flag_type("seed"), default=d.seed,
                 help="seed of the initialisation, the data order and the augmentation")
  p.add_argument("--output-dir", default=d.output_dir,
                 help="where metrics.jsonl, summary.json and the checkpoints are written")
  p.add_argument("--weight-decay", type=_flag_type("weight_decay"), default=d.weight_decay,
                 help="decoupled L2 added to the gradient (optax.add_decayed_weights)")
  p.add_argument("--plot", action="store_true", help="write training_curves.png")
  p.add_argument("--slim", action="store_true",
                 help="at the end, remove the channels that every layer reading them has "
                      "zeroed (rmda_jax.slim; at Z for rmda, BatchNorm in eval mode), print "
                      "the report, write the smaller model to OUTPUT_DIR/slim "
                      "(rmda_jax.slim.load reads it) and the report into summary.json")
  p.add_argument("--resume", action="store_true",
                 help="continue from the last checkpoint in --output-dir")
  p.add_argument("--no-progress", dest="progress", action="store_false",
                 help="hide the per-step progress bar (shown on stderr by default)")
  p.add_argument("--ynn-fusions", action="store_true",
                 help="keep all of XLA:CPU's YNNPACK library fusions (by default "
                      "rmda-train keeps them for reductions only, unless XLA_FLAGS mentions "
                      "them: see rmda_jax/examples/xla_flags.py)")
  p.add_argument("--runs-per-program", type=_flag_type("runs_per_program"),
                 default=d.runs_per_program,
                 help="a sweep (comma lists): at most this many runs per compiled program "
                      "(default: as many as the device's memory holds)")
  p.add_argument("--batching", choices=BATCHINGS, default=d.batching,
                 help="a sweep: vmap batches the runs' arrays (accelerators); unroll "
                      "compiles one copy of the step per run in the program (XLA:CPU, "
                      "where a vmapped convolution is slow); auto: unroll on CPU, vmap "
                      "elsewhere")
  p.add_argument("--mesh", default=d.mesh,
                 help="data=N: shard each batch over N devices (data parallelism); "
                      "data=N,fsdp=M: also shard parameters and optimizer state over M, "
                      "the batch over all N*M (default: data parallelism over all devices; "
                      "--batch-size must be a multiple of N*M; see "
                      "rmda_jax/examples/sharding.py)")
  p.add_argument("--coordinator", default=d.coordinator,
                 help="host:port of process 0, to train over several processes with "
                      "jax.distributed (with --num-processes and --process-id; or set "
                      "JAX_COORDINATOR_ADDRESS in a cluster jax.distributed detects)")
  p.add_argument("--num-processes", type=_flag_type("num_processes"), default=d.num_processes,
                 help="number of processes of a --coordinator run")
  p.add_argument("--process-id", type=_flag_type("process_id"), default=d.process_id,
                 help="this process's index in a --coordinator run (0 writes the logs, "
                      "metrics and summary)")
  return p


def parse_args(argv=None) -> Config:
  """The :class:`Config` of ``argv``; a bad value exits 2 with one line naming its flag."""
  parser = build_parser()
  ns = parser.parse_args(argv)
  try:
    return Config(**vars(ns))
  except ConfigError as e:  # the checks of Config itself: one place for both
    parser.error(f"argument {flag_of(e.field)}: {e.reason}")
