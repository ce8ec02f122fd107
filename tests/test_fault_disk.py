"""A write that fails mid-run (the file-size limit of the process, RLIMIT_FSIZE, stands in
for a full disk: it fails writes the same way, and works for root, whom a read-only
directory does not stop): one error line, a non-zero exit, the previous checkpoint intact,
and a rerun with room resumes from it to the uninterrupted run's parameters."""

import resource
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, cli_env, error_lines, run_cli
from fault_report import record
from memflax import evaluate

ARGS = ['--config=configs/ntm_copy.py:tiny', '--config.checkpoint_every_steps=10',
        '--config.log_every_steps=5', '--config.log.tensorboard=false',
        '--config.lr_schedule=constant']  # the first leg's shorter run must not change the schedule


def _limited_run(workdir, limit_bytes, *extra):
  def limit():
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
  return subprocess.run([sys.executable, str(REPO / 'train.py'), *ARGS, *extra,
                         f'--workdir={workdir}'], cwd=REPO, env=cli_env(), capture_output=True,
                        text=True, timeout=600, preexec_fn=limit)


def _params(workdir):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(evaluate.restore(workdir)[1]))]


@pytest.mark.parametrize('limit_kib', [8, 16])
def test_write_failure_mid_run_keeps_the_previous_checkpoint(tmp_path, limit_kib):
  reference = tmp_path / 'reference'
  assert run_cli('train.py', *ARGS, '--config.num_train_steps=30',
                 f'--workdir={reference}').returncode == 0
  workdir = tmp_path / 'run'
  assert run_cli('train.py', *ARGS, '--config.num_train_steps=10',
                 f'--workdir={workdir}').returncode == 0
  step10 = {p: p.read_bytes() for p in (workdir / 'checkpoints' / '10').rglob('*') if p.is_file()}

  proc = _limited_run(workdir, limit_kib * 1024, '--config.num_train_steps=30')
  lines = error_lines(proc)
  assert proc.returncode == 4 and len(lines) == 1, proc.stderr[-3000:]
  assert lines[0].startswith('error: cannot write the checkpoint at step 20 in '), lines[0]
  assert 'File too large' in lines[0] and 'newest: step 10' in lines[0]
  assert {p: p.read_bytes() for p in step10} == step10  # untouched
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()) == ['10']

  proc = run_cli('train.py', *ARGS, '--config.num_train_steps=30', f'--workdir={workdir}')
  assert proc.returncode == 0 and 'resumed from step 10' in proc.stdout, proc.stderr
  for a, b in zip(_params(reference), _params(workdir)):
    np.testing.assert_array_equal(a, b)
  record('write failure', 'one error, step 10 intact, resumed bit-exact',
         f'RLIMIT_FSIZE {limit_kib} KiB at the step-20 save')
