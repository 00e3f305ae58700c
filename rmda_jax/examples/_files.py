"""Files written whole or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_open", "fsync_dir", "write_json"]


def fsync_dir(directory: str | os.PathLike) -> None:
  """Flushes ``directory``'s entries (a rename into it) to disk; nothing on Windows,
  where a directory cannot be opened (NTFS journals its metadata)."""
  if not hasattr(os, "O_DIRECTORY"):
    return
  fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb"):
  """Opens a temporary file next to ``path``; renames it onto ``path`` on success.

  The data is flushed and fsync'ed before the rename, and the directory after
  it (POSIX), so after a crash ``path`` holds either its old content or the
  whole new one, and a rename that returned survives a power loss. If the
  block raises, the temporary file is removed and ``path`` is untouched.

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
    fsync_dir(path.parent)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


def write_json(path: str | os.PathLike, obj) -> None:
  """Writes ``obj`` as indented JSON to ``path``, atomically (:func:`atomic_open`)."""
  with atomic_open(path, "w") as f:
    f.write(json.dumps(obj, indent=2) + "\n")
