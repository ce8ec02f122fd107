"""benchmarks/task_table.py's rows from real (tiny) runs: a priority-sort row's error
breakdown by priority gap is taken from the same trained model and held-out sequences
as the row's final error, and a finished train.py run gives the row task_table's own
run would."""

from __future__ import annotations

import json
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
  # The NTM has read and write weightings, so the row says where it wrote and read.
  assert 0.0 <= row['target_slot_read_fraction'] <= 1.0
  order = row['write_slot_order']
  assert -1.0 <= order['by_arrival'] <= 1.0 and 1 <= order['distinct_slots'] <= 6


def test_a_finished_train_py_run_joins_the_table_as_the_row_task_table_would_make(tmp_path):
  from conftest import error_lines, run_cli
  workdir, fresh, joined = tmp_path / 'run', tmp_path / 'fresh.json', tmp_path / 'joined.json'
  pick = ['--models', 'ntm', '--tasks', 'copy', '--quick']
  trained = run_cli('train.py', '--config=configs/ntm_copy.py:tiny', '--config.seed=1',
                    f'--workdir={workdir}')
  assert trained.returncode == 0, trained.stderr
  proc = run_cli('benchmarks/task_table.py', *pick, '--seeds', '1', f'--out={fresh}')
  assert proc.returncode == 0, proc.stderr
  proc = run_cli('benchmarks/task_table.py', *pick, '--seeds', '1', f'--from-workdir={workdir}',
                 f'--out={joined}')
  assert proc.returncode == 0, proc.stderr
  [expected], [row] = json.loads(fresh.read_text()), json.loads(joined.read_text())
  assert {k: v for k, v in row.items() if k != 'wall_s'} == {
      k: v for k, v in expected.items() if k != 'wall_s'}
  assert row['wall_s'] > 0
  # Seed 2's preset is another experiment: one error line, nothing written.
  joined.unlink()
  proc = run_cli('benchmarks/task_table.py', *pick, '--seeds', '2', f'--from-workdir={workdir}',
                 f'--out={joined}')
  assert proc.returncode != 0 and not joined.exists()
  [line] = error_lines(proc)
  assert line.startswith('error: ') and 'seed 2' in line and 'seed differ' in line
