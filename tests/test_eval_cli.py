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
  assert list(result) == ['copy', 'memory_profile'] and list(result['copy']) == ['10', '20', '40', '80']
  for length, row in result['copy'].items():
    assert row['num_sequences'] == 16
    # an untrained model gets about half of the 8·length bits wrong, never more than all
    assert 0 < row['bit_errors_per_seq'] <= 8 * int(length)
  errors = [result['copy'][n]['bit_errors_per_seq'] for n in ('10', '20', '40', '80')]
  assert errors == sorted(errors)  # longer sequences, more wrong bits
  profile = result['memory_profile']
  assert profile['size_name'] == 'length' and profile['metric'] == 'bit_errors_per_seq'
  assert profile['sizes'] == sorted(set(profile['sizes'])) and profile['sizes'][0] == 1
  assert profile['sizes'][-1] == 80 and len(profile['values']) == len(profile['sizes'])
  assert 0 < profile['values'][0] < profile['values'][-1]
  for name in ('eval_sequence_len40.png', 'eval_weightings_len40.png', 'eval_memory_len40.png',
               'eval_memory_profile.png'):
    assert (tmp_path / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_eval_of_a_token_task_reports_accuracy_against_pairs_stored(tmp_path):
  assert run_cli('train.py', '--config=configs/lstm_mqar.py:tiny', f'--workdir={tmp_path}',
                 '--config.num_train_steps=10').returncode == 0
  proc = run_cli('eval.py', f'--workdir={tmp_path}', '--num_sequences=32')
  assert proc.returncode == 0, proc.stderr
  result = json.loads((tmp_path / 'eval.json').read_text())
  assert list(result['mqar']) == ['2', '4']  # the tiny variant's eval sizes
  assert all(0 <= row['accuracy'] <= 1 for row in result['mqar'].values())
  profile = result['memory_profile']
  assert profile['size_name'] == 'pairs' and profile['metric'] == 'accuracy'
  assert profile['higher_is_better'] and profile['sizes'] == [1, 2, 3, 4]
  assert (tmp_path / 'eval_memory_profile.png').read_bytes()[:4] == b'\x89PNG'
  # More pairs than the sequence holds is the user's error: one line, nothing rewritten.
  before = (tmp_path / 'eval.json').read_bytes()
  proc = run_cli('eval.py', f'--workdir={tmp_path}', '--lengths=100')
  assert proc.returncode == 2 and proc.stderr.strip().startswith('error: --lengths=100: task.')
  assert (tmp_path / 'eval.json').read_bytes() == before
