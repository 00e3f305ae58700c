"""The Examples blocks of the library's docstrings run and print what they show."""

import doctest

import pytest

import rmda_jax
from rmda_jax import _baselines, _prox, _rmda, metrics, regularizers

MODULES = [rmda_jax, _baselines, _prox, _rmda, metrics, regularizers]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module):
  result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.failed == 0


def test_the_public_functions_have_examples():
  # Every optimizer and regularizer constructor shows how it is called.
  for name in ("rmda", "rmda_multistep", "prox_sgd", "prox_adam", "prox_ssi",
               "l1", "group_lasso"):
    assert ">>>" in getattr(rmda_jax, name).__doc__, name
