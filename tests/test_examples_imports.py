"""The modules of rmda_jax.examples import each other one way only (no cycle).

Every import statement counts, also those inside a function (a late import
hides a cycle; it does not remove it).
"""

import ast
from pathlib import Path

import rmda_jax.examples

PACKAGE = "rmda_jax.examples"
EXAMPLES = Path(rmda_jax.examples.__file__).parent


def imported_examples(path: Path) -> set[str]:
  """Names of the rmda_jax.examples modules that ``path`` imports, anywhere in it."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      # `from rmda_jax.examples import train` and `from rmda_jax.examples.train import x`
      targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    else:
      continue
    for t in targets:
      if t.startswith(PACKAGE + "."):
        mod = t[len(PACKAGE) + 1:].split(".")[0]
        if (EXAMPLES / f"{mod}.py").exists():
          names.add(mod)
  names.discard(path.stem)
  return names


def graph() -> dict[str, set[str]]:
  return {p.stem: imported_examples(p) for p in sorted(EXAMPLES.glob("*.py"))
          if p.stem != "__init__"}


def test_the_graph_is_read():
  # The reader sees the imports it must (else the acyclicity test below proves nothing).
  g = graph()
  assert {"slimming", "checkpoint", "config", "xla_flags"} <= g["train"]
  assert "data" in g["slimming"]


def test_no_import_cycle():
  g = graph()
  state = {}  # 1: on the current path, 2: done

  def visit(node, path):
    state[node] = 1
    for nxt in sorted(g.get(node, ())):
      assert state.get(nxt) != 1, "import cycle: " + " -> ".join(path + [nxt])
      if nxt not in state:
        visit(nxt, path + [nxt])
    state[node] = 2

  for node in g:
    if node not in state:
      visit(node, [node])


def test_slimming_does_not_import_train():
  assert "train" not in graph()["slimming"]
