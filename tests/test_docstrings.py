"""The Examples blocks of the library's docstrings run and print what they show."""

import doctest

import pytest

import rmda_jax
from rmda_jax import _baselines, _ramda, _rmda, _structured, metrics, regularizers

# The modules whose docstrings hold Examples blocks (rmda_jax/__init__.py and
# _prox.py have none; a module added here must contribute at least one).
MODULES = [_baselines, _ramda, _rmda, _structured, metrics, regularizers]
# Every optimizer and regularizer constructor shows how it is called.
MUST_HAVE_EXAMPLES = ("rmda", "rmda_multistep", "ramda", "ramda_multistep", "prox_sgd", "prox_adam", "prox_ssi",
                      "l1", "group_lasso", "nuclear_norm", "sparse_group_lasso", "rank_report",
                      "structured_params")


def _doctests():
  finder = doctest.DocTestFinder()
  return [t for m in MODULES for t in finder.find(m) if t.examples]


DOCTESTS = _doctests()


def _run(test):
  """Runs one docstring's examples; returns (failed, attempted)."""
  runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
  out = []
  runner.run(test, out=out.append)
  result = runner.summarize(verbose=False)
  return result.failed, result.attempted, "".join(out)


@pytest.mark.parametrize("test", DOCTESTS, ids=lambda t: t.name)
def test_docstring_examples(test):
  failed, attempted, report = _run(test)
  assert attempted == len(test.examples) > 0
  assert failed == 0, report


def test_every_module_and_public_constructor_has_examples():
  names = {t.name.rsplit(".", 1)[-1] for t in DOCTESTS}
  missing = [n for n in MUST_HAVE_EXAMPLES if n not in names]
  assert not missing, f"no Examples block run for {missing}"
  for m in MODULES:
    assert any(t.name.startswith(m.__name__ + ".") for t in DOCTESTS), m.__name__
  for n in MUST_HAVE_EXAMPLES:
    assert getattr(rmda_jax, n).__module__ in {m.__name__ for m in MODULES}, n


def test_a_wrong_example_is_reported():
  # The runner used above does fail on an example whose output differs.
  parser = doctest.DocTestParser()
  test = parser.get_doctest(">>> 1 + 1\n3\n", {}, "wrong", None, 0)
  failed, attempted, report = _run(test)
  assert (failed, attempted) == (1, 1) and "Expected" in report
