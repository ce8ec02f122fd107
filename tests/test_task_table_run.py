"""benchmarks/task_table.py's row for one real (tiny) priority-sort run: the error
breakdown by priority gap is taken from the same trained model and held-out sequences
as the row's final error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))
import task_table  # noqa: E402

from memflax.config_presets import compose  # noqa: E402


def test_priority_sort_row_breaks_its_final_error_down_by_priority_gap():
  row = task_table.run('ntm', 'priority_sort', seed=0, quick=True)
  gaps = row['errors_by_priority_gap']
  assert [g['gap_from'] for g in gaps] == [0.0, 0.005, 0.01, 0.02, 0.05, 0.1]
  assert sum(g['fraction'] for g in gaps) == pytest.approx(1.0)
  per_vector = sum(g['fraction'] * (g['bit_errors_per_vector'] or 0.0) for g in gaps)
  num_outputs = compose('ntm', 'priority_sort', 'tiny').task.num_outputs
  assert row['final'] > 1.0  # 100 steps: far from solved, so the check below has errors
  assert per_vector * num_outputs == pytest.approx(row['final'], rel=1e-4)
  assert 0 < row['bucket_sort_floor'] < row['final']
