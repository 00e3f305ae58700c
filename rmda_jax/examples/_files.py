"""Files written whole or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_open", "write_json"]


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb"):
  """Opens a temporary file next to ``path``; renames it onto ``path`` on success.

  The data is flushed and fsync'ed before the rename, so after a crash
  ``path`` holds either its old content or the whole new one. If the block
  raises, the temporary file is removed and ``path`` is untouched.

  Args:
    path: the file to (re)place; its directory must exist.
    mode: ``"wb"`` or ``"w"``.

  Yields:
    The open temporary file.
  """
  path = Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; these are ordinary files
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


def write_json(path: str | os.PathLike, obj) -> None:
  """Writes ``obj`` as indented JSON to ``path``, atomically (:func:`atomic_open`)."""
  with atomic_open(path, "w") as f:
    f.write(json.dumps(obj, indent=2) + "\n")
