"""Saving and loading slim models: :func:`rmda_jax.slim.save` and :func:`rmda_jax.slim.load`.

Private to :mod:`rmda_jax.slim` (its names are re-exported there).
"""

from __future__ import annotations

import ctypes
import errno
import ctypes.util
import importlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from rmda_jax import _slim_model as mdl
from rmda_jax._slim_report import SlimResult

__all__ = ["save", "load"]

_FORMAT = "rmda_jax.slim/1"
_SPEC_FILE = "slim.json"
_STATE_DIR = "state"


def _apply_attributes(model, attributes: Mapping[str, Mapping[str, Any]]) -> None:
  for path, module in mdl.modules(model).items():
    for name, value in attributes.get(path, {}).items():
      setattr(module, name, _decode(value))


def _fsync_dir(directory: Path) -> None:
  """Makes the renames in ``directory`` durable."""
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:  # pragma: no cover - platforms without directory file descriptors
    return
  try:
    os.fsync(fd)
  except OSError:  # pragma: no cover - file systems that cannot sync a directory
    pass
  finally:
    os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
  """Swaps ``a`` and ``b`` in one atomic step (Linux ``renameat2``); False where unsupported."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    renameat2 = libc.renameat2
  except (OSError, AttributeError):
    return False
  renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                        ctypes.c_uint]
  if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
    return True
  err = ctypes.get_errno()
  if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
    return False
  raise OSError(err, f"save: cannot exchange {a} and {b}: {os.strerror(err)}")


def _old_copies(path: Path) -> list[Path]:
  return sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.stat().st_mtime)


def _replace(tmp: Path, path: Path) -> None:
  """Puts the complete directory ``tmp`` at ``path``, replacing what is there.

  Atomic where the system can exchange two paths (Linux): ``path`` holds the
  old model or the new one, never neither. Elsewhere the old model is first
  renamed to ``.NAME.old-*`` next to ``path``; if the second rename fails it is
  renamed back, and if the process dies in between, :func:`_recover` (run by
  :func:`save` and :func:`load`) puts it back.
  """
  if not path.exists():
    os.replace(tmp, path)
  elif _exchange(tmp, path):
    _fsync_dir(path.parent)
    shutil.rmtree(tmp, ignore_errors=True)      # tmp now holds the old model
  else:
    old = path.parent / f".{path.name}.old-{uuid.uuid4().hex}"
    os.replace(path, old)
    try:
      os.replace(tmp, path)
    except BaseException:
      os.replace(old, path)
      _fsync_dir(path.parent)
      raise
    _fsync_dir(path.parent)
    os.remove(old / _SPEC_FILE)     # no longer a model _recover would put back
    shutil.rmtree(old, ignore_errors=True)
  _fsync_dir(path.parent)


def _recover(path: Path) -> None:
  """Restores the model a replacing :func:`save` moved aside, if it died before the new one."""
  if path.exists() or not path.parent.is_dir():
    return
  complete = [p for p in _old_copies(path) if (p / _SPEC_FILE).is_file()]
  if complete:
    os.replace(complete[-1], path)
    _fsync_dir(path.parent)


def _encode(value, where: str):
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.floating):
    return float(value)
  if isinstance(value, tuple):
    return {"__tuple__": [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
  if isinstance(value, list):
    return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
  if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
    return {k: _encode(v, f"{where}[{k!r}]") for k, v in value.items()}
  raise TypeError(f"save: constructor_kwargs{where} is a {type(value).__name__}; only JSON "
                  "values (and tuples) can be stored")


def _decode(value):
  if isinstance(value, list):
    return [_decode(v) for v in value]
  if isinstance(value, dict):
    if set(value) == {"__tuple__"}:
      return tuple(_decode(v) for v in value["__tuple__"])
    return {k: _decode(v) for k, v in value.items()}
  return value


def _resolve(ref: str):
  module, _, qualname = ref.partition(":")
  if not module or not qualname:
    raise ValueError(f"constructor {ref!r} must read 'package.module:name'")
  obj = importlib.import_module(module)
  for part in qualname.split("."):
    obj = getattr(obj, part)
  return obj


def _constructor_ref(constructor) -> str:
  if isinstance(constructor, str):
    ref = constructor
  else:
    qualname = getattr(constructor, "__qualname__", "")
    if "<" in qualname or not getattr(constructor, "__module__", None):
      raise ValueError(f"save: constructor must be a module-level function or class that load "
                       f"can import, got {constructor!r}")
    ref = f"{constructor.__module__}:{qualname}"
  try:
    obj = _resolve(ref)
  except (ImportError, AttributeError, ValueError) as e:
    raise ValueError(f"save: constructor {ref!r} cannot be imported: {e}") from e
  if not isinstance(constructor, str) and obj is not constructor:
    raise ValueError(f"save: constructor {ref!r} imports as another object; pass a "
                     "module-level function or class")
  return ref


def _construct(spec: Mapping[str, Any]):
  """The constructor's model, abstract (shapes only): ``nnx.eval_shape`` of the call."""
  ctor = _resolve(spec["constructor"])
  kwargs = _decode(spec["constructor_kwargs"])
  return nnx.eval_shape(lambda: ctor(**kwargs, rngs=nnx.Rngs(0)))


def _rebuild(spec: Mapping[str, Any]):
  """graphdef, leaf treedef and variable paths of the model ``spec`` describes."""
  abstract = _construct(spec)
  _apply_attributes(abstract, spec["attributes"])
  for where, n in spec.get("gathers", {}).items():
    module = mdl.modules(abstract).get(where)
    if not isinstance(module, nnx.Linear):
      raise ValueError(f"{spec['constructor']}(**constructor_kwargs) has no nnx.Linear at "
                       f"'{where}' to gather the input of")
    mdl.replace_module(abstract, where, mdl.gathered(
        module, jax.ShapeDtypeStruct((int(n),), jnp.int32)))
  graphdef, treedef, leaves, _, parts = mdl.split(abstract)
  stored = {tuple(v["path"]): v for v in spec["variables"]}
  missing = sorted("/".join(p) for p in set(stored) - set(parts))
  extra = sorted("/".join(p) for p in set(parts) - set(stored))
  if missing or extra:
    raise ValueError(f"{spec['constructor']}(**constructor_kwargs) builds other variables than "
                     f"the slim model (missing: {missing[:5]}, not in the slim model: {extra[:5]})")
  for p, leaf in zip(parts, leaves):
    if len(stored[p]["shape"]) != np.ndim(leaf):
      raise ValueError(f"{spec['constructor']}(**constructor_kwargs) builds "
                       f"{'/'.join(p)} of rank {np.ndim(leaf)}; the slim model's has rank "
                       f"{len(stored[p]['shape'])}")
  return graphdef, treedef, parts


def _nested(parts_list, values) -> dict:
  tree: dict = {}
  for parts, value in zip(parts_list, values):
    node = tree
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = value
  return tree


def _lookup(tree, parts):
  for p in parts:
    tree = tree[p]
  return tree


def _is_key(leaf) -> bool:
  return jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def save(path: str | os.PathLike, result: SlimResult, *, constructor: Callable | str,
         constructor_kwargs: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
  """Writes the slim model (Orbax) and what :func:`load` needs to rebuild it.

  The directory holds ``state/`` (an Orbax checkpoint of every variable) and
  ``slim.json``: the constructor's import path and keyword arguments, each
  variable's path, shape and dtype, the modules' plain attributes (numbers,
  strings, tuples) that differ from a freshly constructed model (the Flax
  layers' ``in_features``, ``out_features``, ``num_features``,
  ``kernel_shape``; BatchNorm's ``use_running_average``), the input selection
  and the report. :func:`load` builds the model's structure
  with ``nnx.eval_shape(lambda: constructor(**constructor_kwargs, rngs=...))``,
  resizes it to the stored shapes and restores the values. Nothing is pickled.

  The write is atomic: everything goes to a temporary directory next to
  ``path``, put at ``path`` when complete (over an existing model, by one
  atomic exchange of the two directories where the system has it, Linux;
  elsewhere by two renames, the first undone if the second fails, and undone
  by the next :func:`save` or :func:`load` of ``path`` if the process died in
  between), and the directory is synced after the renames. On failure the
  temporary directory is removed and ``path`` holds the old model.

  Args:
    path: the directory to write.
    result: what :func:`slim` returned.
    constructor: what built the original model: a module-level function or
      class (or its ``"package.module:name"``) accepting ``rngs=`` and the
      keyword arguments below, e.g. ``rmda_jax.examples.models.get_model``.
    constructor_kwargs: its keyword arguments (JSON values and tuples), e.g.
      ``{"name": "lenet5_small", "num_classes": 10, "input_shape": (28, 28, 1)}``.
    overwrite: whether an existing ``path`` is replaced.

  Returns:
    ``path``.

  Raises:
    FileExistsError: ``path`` exists and ``overwrite`` is false.
    ValueError: the constructor cannot be imported, or does not build a model
      with the slim model's variables.
    TypeError: a keyword argument cannot be stored as JSON.

  Examples:
    >>> import tempfile, jax.numpy as jnp
    >>> from flax import nnx
    >>> from rmda_jax import slim as slim_lib
    >>> from rmda_jax.examples import models
    >>> model = models.get_model("logreg", 10, nnx.Rngs(0), (4, 4, 1))
    >>> result = slim_lib.slim(model, jnp.ones((2, 4, 4, 1)), timing_runs=0)
    >>> d = tempfile.mkdtemp()
    >>> _ = slim_lib.save(f"{d}/logreg", result, constructor=models.get_model,
    ...                   constructor_kwargs={"name": "logreg", "input_shape": (4, 4, 1)})
    >>> slim_lib.load(f"{d}/logreg").fc.kernel.shape
    (16, 10)
  """
  if not isinstance(result, SlimResult):
    raise TypeError(f"save: result must be what slim() returned, got {type(result).__name__}")
  path = Path(path).absolute()
  _recover(path)
  if path.exists() and not overwrite:
    raise FileExistsError(f"save: {path} exists; pass overwrite=True to replace it")
  ref = _constructor_ref(constructor)
  kwargs = _encode(dict(constructor_kwargs or {}), "")
  _, _, leaves, _, parts = mdl.split(result.model)
  spec = {
      "format": _FORMAT,
      "constructor": ref,
      "constructor_kwargs": kwargs,
      "attributes": {},
      "variables": [{"path": list(p), "shape": list(np.shape(l)),
                     "dtype": str(l.dtype) if not _is_key(l) else "key",
                     "key_impl": str(jax.random.key_impl(l)) if _is_key(l) else None}
                    for p, l in zip(parts, leaves)],
      "gathers": {where: int(module.input_index.shape[0])
                  for where, module in mdl.modules(result.model).items()
                  if isinstance(module, mdl.GatheredLinear)},
      "input": (None if result.input_index is None else
                {"axis": result.input_axis, "index": [int(i) for i in result.input_index]}),
      "report": result.report.to_dict(),
  }
  try:
    built = mdl.modules(_construct(spec))
    # The attributes where the slim model differs from a fresh one: sizes, eval mode, ...
    for where, module in mdl.modules(result.model).items():
      fresh = mdl.plain_attributes(built[where]) if where in built else {}
      diff = {k: _encode(v, "") for k, v in mdl.plain_attributes(module).items()
              if k not in fresh or fresh[k] != v or type(fresh[k]) is not type(v)}
      if diff:
        spec["attributes"][where] = diff
    _rebuild(spec)
  except (ImportError, AttributeError, TypeError) as e:
    raise ValueError(f"save: {ref}(**constructor_kwargs, rngs=...) fails: "
                     f"{type(e).__name__}: {e}") from e
  except ValueError as e:
    raise ValueError(f"save: {e}") from e
  arrays = [jax.random.key_data(l) if _is_key(l) else l for l in leaves]
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
  try:
    checkpointer = ocp.StandardCheckpointer()
    try:
      checkpointer.save(tmp / _STATE_DIR, _nested(parts, arrays))
      checkpointer.wait_until_finished()
    finally:
      checkpointer.close()
    with open(tmp / _SPEC_FILE, "w") as f:
      json.dump(spec, f, indent=1)
      f.flush()
      os.fsync(f.fileno())
    _replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path


def load(path: str | os.PathLike):
  """Reads a slim model written by :func:`save`.

  Args:
    path: the directory :func:`save` wrote.

  Returns:
    The slim ``nnx.Module``; its outputs equal those of ``result.model``. When
    the input was pruned, it expects the selected input (``slim.json`` holds
    the ``input`` axis and indices, as ``SlimResult.select_input`` applies them).

  Raises:
    FileNotFoundError: ``path`` is not a directory written by :func:`save`.
    ValueError: the checkpoint's format is unknown, or its constructor no
      longer builds a model with its variables.
  """
  path = Path(path).absolute()
  _recover(path)
  spec_file = path / _SPEC_FILE
  if not spec_file.is_file():
    raise FileNotFoundError(f"load: {path} is not a slim checkpoint (no {_SPEC_FILE})")
  with open(spec_file) as f:
    spec = json.load(f)
  if spec.get("format") != _FORMAT:
    raise ValueError(f"load: {spec_file} has format {spec.get('format')!r}, expected {_FORMAT!r}")
  try:
    graphdef, treedef, parts = _rebuild(spec)
  except ValueError as e:
    raise ValueError(f"load: {e}") from e
  stored = {tuple(v["path"]): v for v in spec["variables"]}
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  targets = []
  for p in parts:
    v = stored[p]
    dtype = jnp.uint32 if v["dtype"] == "key" else jnp.dtype(v["dtype"])
    shape = tuple(v["shape"])
    if v["dtype"] == "key":
      shape = shape + tuple(jax.random.key_data(
          jax.random.key(0, impl=v["key_impl"])).shape)
    targets.append(jax.ShapeDtypeStruct(shape, dtype, sharding=sharding))
  checkpointer = ocp.StandardCheckpointer()
  try:
    restored = checkpointer.restore(path / _STATE_DIR, _nested(parts, targets))
  finally:
    checkpointer.close()
  leaves = []
  for p in parts:
    leaf = _lookup(restored, p)
    if stored[p]["dtype"] == "key":
      leaf = jax.random.wrap_key_data(leaf, impl=stored[p]["key_impl"])
    leaves.append(leaf)
  model = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
  return model
