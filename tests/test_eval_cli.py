"""eval.py restores the newest checkpoint and writes eval.json and PNGs."""

import json

from conftest import run_cli


def test_eval_writes_length_generalisation_and_plots(tmp_path):
  assert run_cli('train.py', '--config=configs/ntm_copy.py:tiny', f'--workdir={tmp_path}',
                 '--config.num_train_steps=20').returncode == 0
  proc = run_cli('eval.py', f'--workdir={tmp_path}', '--lengths=10,20,40,80',
                 '--num_sequences=16')
  assert proc.returncode == 0, proc.stderr
  result = json.loads((tmp_path / 'eval.json').read_text())
  assert list(result) == ['copy'] and list(result['copy']) == ['10', '20', '40', '80']
  for length, row in result['copy'].items():
    assert row['num_sequences'] == 16
    # an untrained model gets about half of the 8·length bits wrong, never more than all
    assert 0 < row['bit_errors_per_seq'] <= 8 * int(length)
  errors = [result['copy'][n]['bit_errors_per_seq'] for n in ('10', '20', '40', '80')]
  assert errors == sorted(errors)  # longer sequences, more wrong bits
  for name in ('eval_sequence_len40.png', 'eval_weightings_len40.png'):
    assert (tmp_path / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
