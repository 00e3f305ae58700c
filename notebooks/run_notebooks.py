"""Executes the notebooks of this folder top to bottom with nbclient.

    python notebooks/run_notebooks.py --quick            # smoke run (RMDA_JAX_QUICK=1), writes nothing
    python notebooks/run_notebooks.py --write            # full run, outputs saved into the notebooks
    python notebooks/run_notebooks.py --write quickstart # one notebook

Each notebook is read into memory and executed there, in a fresh kernel whose
working directory is a temporary folder; the file on disk changes only with
``--write``. Then the outputs are cleaned of what is specific to this machine
(absolute paths of the checkout, the Python installation and the home folder)
and of execution timestamps, so the committed notebooks render on GitHub
without local noise. ``tests/test_notebooks.py`` uses :func:`execute` and
:func:`problems` in quick mode.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
QUICK_ENV = "RMDA_JAX_QUICK"


def notebooks() -> list[Path]:
  """The notebooks of this folder, sorted by name."""
  return sorted(HERE.glob("*.ipynb"))


def execute(path: str | os.PathLike, *, quick: bool, timeout: int = 1800,
            env: dict | None = None) -> nbformat.NotebookNode:
  """Runs the notebook at ``path`` in memory and returns it with its outputs.

  Args:
    path: the ``.ipynb`` file (read, never written).
    quick: set ``RMDA_JAX_QUICK=1`` in the kernel's environment (else ``0``).
    timeout: seconds allowed per cell.
    env: extra environment variables for the kernel.

  Raises:
    nbclient.exceptions.CellExecutionError: a cell raised; the message holds
      the cell's source and traceback.
  """
  nb = nbformat.read(path, as_version=4)
  kernel_env = {**os.environ, QUICK_ENV: "1" if quick else "0", **(env or {})}
  with tempfile.TemporaryDirectory(prefix="rmda_jax-nb-") as cwd:
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            record_timing=False, resources={"metadata": {"path": cwd}})
    client.execute(env=kernel_env)
  return nb


def output_text(output) -> str:
  """The text an output shows: stream text, error name/value/traceback, text/* data."""
  if output.get("output_type") == "stream":
    parts = [output.get("text", "")]
  elif output.get("output_type") == "error":
    parts = [output.get("ename", ""), output.get("evalue", ""), *output.get("traceback", [])]
  else:
    parts = [v if isinstance(v, str) else "".join(v)
             for k, v in output.get("data", {}).items() if k.startswith("text/")]
  return "\n".join(parts)


def problems(nb: nbformat.NotebookNode) -> list[str]:
  """One line per code cell that errored or printed a traceback (empty: clean run)."""
  found = []
  for i, cell in enumerate(nb.cells):
    if cell.cell_type != "code":
      continue
    for out in cell.get("outputs", []):
      text = output_text(out)
      if out.get("output_type") == "error" or "Traceback" in text:
        first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
        kind = out.get("ename") or out.get("name") or out.get("output_type")
        found.append(f"cell {i} ({first!r}): {kind}: {text.strip()[:500]}")
        break
  return found


def _local_prefixes() -> list[tuple[str, str]]:
  """(absolute path, placeholder) pairs to strip from outputs, longest first."""
  pairs = {str(ROOT): "<repo>", str(Path.home()): "~", sys.prefix: "<python>"}
  for key in ("purelib", "platlib", "stdlib"):
    pairs[sysconfig.get_paths()[key]] = f"<{key}>"
  pairs[tempfile.gettempdir()] = "<tmp>"
  return sorted(pairs.items(), key=lambda kv: -len(kv[0]))


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
  """Strips machine-specific noise from outputs, in place: absolute local paths,
  execution timestamps; also empties ``metadata.widgets``."""
  prefixes = _local_prefixes()

  def scrub(text: str) -> str:
    for path, placeholder in prefixes:
      text = text.replace(path, placeholder)
    return re.sub(r"<tmp>/rmda_jax-nb-[^/\s'\"]+", "<tmp>/...", text)

  for cell in nb.cells:
    cell.metadata.pop("execution", None)
    for out in cell.get("outputs", []):
      if out.get("output_type") == "stream":
        out["text"] = scrub(out["text"])
      elif out.get("output_type") == "error":
        out["traceback"] = [scrub(t) for t in out["traceback"]]
      for key, value in out.get("data", {}).items():
        if key.startswith("text/"):
          out["data"][key] = scrub(value if isinstance(value, str) else "".join(value))
  nb.metadata.pop("widgets", None)
  return nb


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("names", nargs="*", help="notebook names (default: all), e.g. quickstart")
  ap.add_argument("--quick", action="store_true", help=f"{QUICK_ENV}=1 (short runs)")
  ap.add_argument("--write", action="store_true",
                  help="save the cleaned outputs into the notebooks (full runs only)")
  ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
  args = ap.parse_args(argv)
  if args.write and args.quick:
    ap.error("--write saves full runs only; drop --quick")
  paths = notebooks()
  if args.names:
    wanted = {Path(n).stem for n in args.names}
    unknown = wanted - {p.stem for p in paths}
    if unknown:
      ap.error(f"no such notebook(s): {sorted(unknown)}; have {[p.stem for p in paths]}")
    paths = [p for p in paths if p.stem in wanted]
  failed = 0
  for path in paths:
    t0 = time.perf_counter()
    try:
      nb = execute(path, quick=args.quick, timeout=args.timeout)
      bad = problems(nb)
    except CellExecutionError as e:
      bad = [str(e).strip().splitlines()[-1]]
    secs = time.perf_counter() - t0
    status = "ok" if not bad else "FAILED"
    print(f"{path.name}: {status} in {secs:.0f} s", flush=True)
    for line in bad:
      print("  " + line)
    failed += bool(bad)
    if args.write and not bad:
      nbformat.write(clean(nb), path)
      print(f"  wrote {path.relative_to(ROOT)}")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
