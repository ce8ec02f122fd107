"""Checkpoint resume: exact after SIGKILL (even mid-save), and past a corrupt checkpoint."""

import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO, cli_env, error_lines, read_metrics, run_cli
from memflax import evaluate

TINY = '--config=configs/ntm_copy.py:tiny'
LONG = [TINY, '--config.num_train_steps=400', '--config.checkpoint_every_steps=25',
        '--config.log_every_steps=25', '--config.eval_every_steps=200']


def _final_params(workdir):
  _, params, step = evaluate.restore(workdir)
  return jax.device_get(params), step


def _start(workdir):
  return subprocess.Popen([sys.executable, str(REPO / 'train.py'), *LONG, f'--workdir={workdir}'],
                          cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)


def _kill_when(proc, condition, timeout=600.0):
  """SIGKILLs proc as soon as condition() holds; returns whether it was killed."""
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if condition():
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      return True
    time.sleep(0.002)
  proc.wait()
  return False


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_is_bit_exact(tmp_path):
  reference = tmp_path / 'reference'
  assert run_cli('train.py', *LONG, f'--workdir={reference}').returncode == 0

  workdir = tmp_path / 'killed'
  ckpts = workdir / 'checkpoints'
  # 1) Kill during an asynchronous save: a temporary checkpoint directory exists.
  proc = _start(workdir)
  killed_mid_save = _kill_when(
      proc, lambda: ckpts.is_dir() and any('tmp' in p.name for p in ckpts.iterdir()))
  # 2) Kill at an arbitrary moment of training after the resume.
  rng = random.Random(0)
  proc = _start(workdir)
  start_rows = len(read_metrics(workdir)) if (workdir / 'metrics.jsonl').exists() else 0
  _kill_when(proc, lambda: (workdir / 'metrics.jsonl').exists()
             and len(read_metrics(workdir)) > start_rows + rng.randint(1, 4))
  # 3) Run to the end.
  assert run_cli('train.py', *LONG, f'--workdir={workdir}').returncode == 0

  assert killed_mid_save, 'the run finished before a save could be interrupted'
  expected, step = _final_params(reference)
  actual, resumed_step = _final_params(workdir)
  assert step == resumed_step == 400
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(actual)):
    np.testing.assert_array_equal(a, b)


def test_corrupt_latest_checkpoint_falls_back_without_deleting(tmp_path):
  workdir = tmp_path / 'run'
  common = [TINY, f'--workdir={workdir}', '--config.checkpoint_every_steps=10']
  assert run_cli('train.py', *common, '--config.num_train_steps=20').returncode == 0
  data = max((p for p in (workdir / 'checkpoints' / '20').rglob('*') if p.is_file()),
             key=lambda p: p.stat().st_size)
  data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
  truncated_size, relative = data.stat().st_size, data.relative_to(workdir / 'checkpoints' / '20')

  proc = run_cli('train.py', *common, '--config.num_train_steps=30')
  assert proc.returncode == 0, proc.stderr
  warnings = [l for l in error_lines(proc) if l.startswith('warning:')]
  assert len(warnings) == 1 and 'step 20 is corrupt' in warnings[0], error_lines(proc)
  assert 'resumed from step 10' in proc.stdout
  quarantined = list((workdir / 'corrupt_checkpoints').iterdir())
  assert len(quarantined) == 1 and quarantined[0].name.startswith('20-')
  assert (quarantined[0] / relative).stat().st_size == truncated_size  # kept, as it was
  assert sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()
                if p.name.isdigit()) == [10, 20, 30]
