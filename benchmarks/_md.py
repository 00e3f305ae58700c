"""Markdown helpers of the README renderers (``render``, ``render_deep``)."""

from __future__ import annotations


def _machine(m):
  if not m:
    return "machine not recorded"
  cpu = m.get("cpu") or m.get("platform", "?")
  parts = [f"{cpu} x {m.get('cpu_count', m.get('cpus', '?'))}"]
  if m.get("jax"):
    parts.append(f"jax {m['jax']}")
  if m.get("optax"):
    parts.append(f"optax {m['optax']}")
  if m.get("date"):
    parts.append(m["date"][:10])
  return ", ".join(parts)


def _table(head, rows):
  out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
  out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
  return "\n".join(out)
