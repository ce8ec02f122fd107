"""The product's headline: the default NTM learns the copy task within 30,000 sequences,
and associative recall (NTM paper §4.3) within its default 40,000."""

import pytest

from conftest import read_metrics, run_cli


@pytest.mark.slow
def test_ntm_copy_converges_with_default_config(tmp_path):
  proc = run_cli('train.py', '--config=configs/ntm_copy.py', f'--workdir={tmp_path}')
  assert proc.returncode == 0, proc.stderr
  evals = [r for r in read_metrics(tmp_path) if 'eval_bit_errors_per_seq' in r]
  batch = 8
  converged = [r['step'] * batch for r in evals if r['eval_bit_errors_per_seq'] < 0.1]
  assert converged, [r['eval_bit_errors_per_seq'] for r in evals]
  assert converged[0] <= 30_000, converged[0]
  assert evals[-1]['eval_bit_errors_per_seq'] < 0.1  # and it is still copying at the end


@pytest.mark.slow
def test_ntm_associative_recall_learns_with_default_config(tmp_path):
  # The README's command; ~2 min here. Threshold: the task table's 1 bit error/seq at 6 items.
  proc = run_cli('train.py', '--config=configs/ntm_associative_recall.py', f'--workdir={tmp_path}')
  assert proc.returncode == 0, proc.stderr
  errors = [r['eval_bit_errors_per_seq'] for r in read_metrics(tmp_path)
            if 'eval_bit_errors_per_seq' in r]
  assert errors[0] > 5, errors  # untrained: most of the 18 bits of the answer are guesses
  assert errors[-1] < 1.0, errors
