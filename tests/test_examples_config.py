"""rmda-train's flags: every one explained, on/off switches described as switches."""

import argparse
import dataclasses
from pathlib import Path

import pytest

from rmda_jax.examples import config


def flags():
  return [a for a in config.build_parser()._actions if a.option_strings]


def test_every_flag_has_help():
  for action in flags():
    assert action.help and action.help.strip() and action.help is not argparse.SUPPRESS, \
        action.option_strings


def test_every_config_field_is_a_flag():
  dests = {a.dest for a in flags()} - {"help"}
  assert dests == {f.name for f in dataclasses.fields(config.Config)}


def help_of(flag: str) -> str:
  """The help paragraph of ``flag`` as ``--help`` prints it (one line, whitespace collapsed)."""
  text = config.build_parser().format_help()
  start = text.index("\n  " + flag) + 1
  end = text.find("\n  -", start + 1)
  return " ".join(text[start:end].split())


def test_no_progress_help_reads_right():
  text = help_of("--no-progress")
  assert "progress bar" in text
  assert "default: True" not in text and "default: False" not in text


@pytest.mark.parametrize("flag", ["--plot", "--resume", "--offline", "--ynn-fusions"])
def test_switches_do_not_print_a_default(flag):
  assert "(default:" not in help_of(flag)


@pytest.mark.parametrize("flag,default", [("--epochs", "6"), ("--batch-size", "128"),
                                          ("--model", "lenet5_small")])
def test_valued_flags_print_their_default(flag, default):
  assert f"(default: {default})" in help_of(flag)


def test_flags_without_a_fixed_default_do_not_print_none():
  for flag in ("--lr", "--momentum", "--data-dir"):
    assert "(default: None)" not in help_of(flag)
  assert "default per optimizer" in help_of("--lr")
  assert "(default: 3,5)" in help_of("--milestones")


# Config checks its own fields, built in Python as from the command line.
BAD_CONFIGS = [
    (dict(optimizer="prox_adam", momentum=0.5), "momentum", "prox_adam takes no momentum"),
    (dict(optimizer="prox_ssi", momentum=0.0), "momentum", "takes no momentum"),
    (dict(optimizer="rmda", momentum=0.0), "momentum", "(0, 1]"),
    (dict(optimizer="sgd", momentum=1.0), "momentum", "[0, 1)"),
    (dict(momentum=1.5), "momentum", "[0, 1]"),
    (dict(lr=-0.1), "lr", "> 0"),
    (dict(lr=float("nan")), "lr", "finite"),
    (dict(lr="0.1"), "lr", "a number"),
    (dict(strength=True), "strength", "a number"),
    (dict(epochs=2.5), "epochs", "an integer"),
    (dict(epochs=0), "epochs", "positive"),
    (dict(batch_size=-1), "batch_size", "positive"),
    (dict(seed=-1), "seed", ">= 0"),
    (dict(gamma=0), "gamma", "> 0"),
    (dict(weight_decay=-1e-4), "weight_decay", ">= 0"),
    (dict(milestones=(5, 3)), "milestones", "increasing"),
    (dict(milestones=(0,)), "milestones", "positive"),
    (dict(milestones="3,5"), "milestones", "tuple"),
    (dict(groups="rows"), "groups", "kernel axis"),
    (dict(model="alexnet"), "model", "lenet5_small"),
    (dict(dataset="imagenet"), "dataset", "mnist"),
    (dict(optimizer="adamw"), "optimizer", "rmda"),
    (dict(regularizer="l2"), "regularizer", "group_lasso"),
    (dict(strength=0.0), "strength", "--regularizer none"),
    (dict(regularizer="sparse_group_lasso"), "l1_strength", "needs --l1-strength"),
    (dict(l1_strength=1e-4), "l1_strength", "only for"),
    (dict(regularizer="nuclear", optimizer="prox_ssi"), "optimizer", "nuclear"),
    (dict(plot=1), "plot", "True or False"),
    (dict(output_dir=None), "output_dir", "a path"),
    (dict(data_dir=3), "data_dir", "a path"),
    (dict(mesh=8), "mesh", "a string"),
    (dict(num_processes=0), "num_processes", "positive"),
]


@pytest.mark.parametrize("kwargs,field,needle", BAD_CONFIGS)
def test_config_refuses_a_bad_field_naming_it(kwargs, field, needle):
  with pytest.raises(config.ConfigError) as e:
    config.Config(**kwargs)
  assert e.value.field == field
  assert str(e.value).startswith(f"Config.{field}: ") and needle in str(e.value)


def test_config_takes_good_values_and_normalises():
  cfg = config.Config(optimizer="sgd", momentum=0, lr=1, milestones=[2, 4], groups=0,
                      regularizer="sparse_group_lasso", l1_strength=1e-5)
  assert cfg.milestones == (2, 4) and cfg.groups == "0"
  assert config.Config(output_dir=Path("runs") / "x").output_dir == str(Path("runs") / "x")
  assert cfg == config.parse_args(["--optimizer", "sgd", "--momentum", "0", "--lr", "1",
                                   "--milestones", "2,4", "--groups", "0",
                                   "--regularizer", "sparse_group_lasso",
                                   "--l1-strength", "1e-5"])
  # replace() checks too
  with pytest.raises(config.ConfigError, match="momentum"):
    dataclasses.replace(cfg, optimizer="prox_adam")


@pytest.mark.parametrize("argv,flag,needle", [
    (["--optimizer", "prox_adam", "--momentum", "0.5"], "--momentum", "takes no momentum"),
    (["--regularizer", "sparse_group_lasso"], "--l1-strength", "needs --l1-strength"),
    (["--regularizer", "nuclear", "--optimizer", "prox_ssi"], "--optimizer", "nuclear"),
    (["--strength", "0"], "--strength", "--regularizer none"),
    (["--lr", "-2"], "--lr", "must be > 0, got -2.0"),
    (["--milestones", "5,3"], "--milestones", "increasing"),
])
def test_parse_args_reports_configs_checks_as_one_line_naming_the_flag(argv, flag, needle,
                                                                       capsys):
  with pytest.raises(SystemExit) as e:
    config.parse_args(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith(f"rmda-train: error: argument {flag}: ") and needle in err[-1]
  assert "Config." not in err[-1] and "Traceback" not in "\n".join(err)


def test_every_field_has_its_flag_name():
  # parse_args names the flag of the field Config refuses.
  by_dest = {a.dest: a.option_strings[0] for a in flags()}
  for f in dataclasses.fields(config.Config):
    assert config.flag_of(f.name) == by_dest[f.name]
