"""rmda-train's final table: the labels say what the numbers are."""

from rmda_jax.examples import report


def summary(regularizer, **extra):
  return {"config": {"regularizer": regularizer}, "reported_point": "Z",
          "test_accuracy": 0.9, "test_accuracy_w": None, "objective": 0.25,
          "group_sparsity": 0.4, "weighted_group_sparsity": 0.3, "sparsity": 0.2,
          "wall_time_s": 1.0, "groups_kept": {"['fc']['kernel']": "6/10"}, **extra}


def rows(lines):
  """{label: value} of the table's two-column rows."""
  out = {}
  for line in lines[1:-1]:
    label, value = line.strip().rsplit("  ", 1)
    out[label.strip()] = value.strip()
  return out


def test_group_lasso_table():
  lines = report.final_table(summary("group_lasso"))
  r = rows(lines)
  assert r["group sparsity"] == "40.00%" and r["weighted group sparsity"] == "30.00%"
  assert lines[-1] == "  groups kept per layer: ['fc']['kernel'] 6/10"


def test_nuclear_table_speaks_of_rank_not_groups():
  lines = report.final_table(summary("nuclear", rank=6, full_rank=10))
  assert not any("group" in line for line in lines), lines
  r = rows(lines)
  assert r["rank dropped (zero singular values / full rank)"] == "40.00%"
  assert r["rank dropped, weighted by max(m, n) per kernel"] == "30.00%"
  assert r["unstructured sparsity"] == "20.00%"
  assert lines[-1] == "  rank kept per layer: ['fc']['kernel'] 6/10"
