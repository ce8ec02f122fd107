"""benchmarks/task_table.py --merge: rows of separate runs joined (the later file wins for
one model, task and seed) and the README's Markdown table drawn from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))
import task_table  # noqa: E402


def _row(model, task, seed, reached, final, wall, threshold=1.0):
  return dict(model=model, task=task, seed=seed, metric='bit_errors_per_seq',
              threshold=threshold, sequences_to_threshold=reached, final=final,
              train_sequences=64000, wall_s=wall, curve=[[32000, final + 1], [64000, final]])


def test_merge_keeps_one_row_per_run_the_last_file_winning(tmp_path):
  first, second = tmp_path / 'a.json', tmp_path / 'b.json'
  first.write_text(json.dumps([_row('dnc', 'priority_sort', 0, None, 31.0, 700),
                               _row('dnc', 'copy', 1, 24000, 0.001, 800)]))
  second.write_text(json.dumps([_row('dnc', 'copy', 1, 16000, 0.0005, 790),
                                _row('dnc', 'copy', 0, 40000, 0.015, 900)]))
  rows = task_table.merge([first, second])
  assert [(r['task'], r['seed']) for r in rows] == [('copy', 0), ('copy', 1),
                                                    ('priority_sort', 0)]
  assert rows[1]['sequences_to_threshold'] == 16000  # b.json replaced a.json's seed 1


def test_markdown_table_marks_unmet_and_unrun_seeds():
  rows = [_row('lstm', 'copy', 0, None, 1.6300001, 882), _row('lstm', 'copy', 2, 8000, 0.05, 1392),
          _row('lstm', 'ngrams', 0, 57600, 138.44, 1501, threshold=1.1 * 126.9)]
  lines = task_table.markdown_tables(rows).splitlines()
  assert lines[0] == 'lstm:'
  assert lines[4] == '| copy (< 0.1) | 64,000 seq | — / · / 8,000 | 1.63 / · / 0.050 | 14:42–23:12 |'
  assert lines[5] == ('| N-grams (≤ 1.1 × optimum 126.9) | 64,000 seq | 57,600 / · / · '
                      '| 138.4 / · / · | 25:01 |')


def test_merge_command_writes_the_joined_file_and_plots(tmp_path):
  part = tmp_path / 'part.json'
  part.write_text(json.dumps([_row('ntm', 'copy', 0, 8000, 0.0, 100)]))
  out = tmp_path / 'merged.json'
  result = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'task_table.py'),
                           '--merge', str(part), '--out', str(out)],
                          capture_output=True, text=True, check=True, cwd=ROOT)
  assert json.loads(out.read_text())[0]['final'] == 0.0
  assert (tmp_path / 'merged_copy.png').stat().st_size > 0
  assert '| copy (< 0.1) | 64,000 seq | 8,000 / · / · | 0 / · / · | 1:40 |' in result.stdout
