"""rmda-train's flags: every one explained, on/off switches described as switches."""

import argparse
import dataclasses

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
