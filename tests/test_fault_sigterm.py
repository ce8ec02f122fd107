"""SIGTERM (what a preempted TPU VM or a cluster scheduler sends): the run saves a checkpoint
at the step it reached, exits 0, and a rerun resumes from exactly that step; a chain of such
stops ends bit-for-bit where an uninterrupted run ends."""

import json
import random
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO, cli_env, read_metrics, run_cli
from fault_report import record
from memflax import evaluate

ARGS = ['--config=configs/ntm_copy.py:tiny', '--config.num_train_steps=240',
        '--config.checkpoint_every_steps=100', '--config.log_every_steps=5',
        '--config.eval_every_steps=120', '--config.log.tensorboard=false']
CL_ARGS = ['--config=configs/cl_ntm_tasks.py:tiny', '--config.continual.strategy=replay',
           '--config.num_train_steps=40', '--config.checkpoint_every_steps=20',
           '--config.log_every_steps=5', '--config.eval_every_steps=40',
           '--config.eval.num_sequences=32', '--config.continual.replay_buffer_size=16',
           '--config.log.tensorboard=false']


def _terminate_when(args, workdir, condition, timeout=600.0):
  """Starts train.py, sends SIGTERM once condition() holds; returns (returncode, stdout,
  seconds from SIGTERM to exit)."""
  proc = subprocess.Popen([sys.executable, str(REPO / 'train.py'), *args, f'--workdir={workdir}'],
                          cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None and not condition():
    time.sleep(0.01)
  assert proc.poll() is None, 'the run ended before SIGTERM could be sent'
  sent = time.time()
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  return proc.returncode, out, err, time.time() - sent


def _rows(workdir):
  path = workdir / 'metrics.jsonl'
  return len(path.read_text().splitlines()) if path.exists() else 0


def _params(workdir):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(evaluate.restore(workdir)[1]))]


@pytest.mark.slow
def test_sigterm_saves_the_current_step_exits_0_and_resumes_bit_exact(tmp_path):
  reference = tmp_path / 'reference'
  assert run_cli('train.py', *ARGS, f'--workdir={reference}').returncode == 0

  workdir = tmp_path / 'preempted'
  rng = random.Random(12)
  previous = 0
  for trial in range(3):
    wait_rows = _rows(workdir) + rng.randint(2, 8)
    code, out, err, seconds = _terminate_when(ARGS, workdir, lambda: _rows(workdir) >= wait_rows)
    assert code == 0, err
    assert not err.strip(), err  # a clean stop: nothing on stderr
    match = re.search(r'memflax: SIGTERM: saved a checkpoint at step (\d+) in ', out)
    assert match, out
    step = int(match.group(1))
    assert step > previous and step % 100 != 0 or step == previous  # an off-cadence save
    assert (workdir / 'checkpoints' / str(step)).is_dir()
    rows = read_metrics(workdir)
    assert max(r['step'] for r in rows) <= step  # it stopped where it saved
    if trial:
      assert f'resumed from step {previous}' in out
    record('sigterm', 'saved, exit 0, resumed', f'step {step}', seconds_to_exit=round(seconds, 2))
    previous = step
  proc = run_cli('train.py', *ARGS, f'--workdir={workdir}')
  assert proc.returncode == 0 and f'resumed from step {previous}' in proc.stdout
  for a, b in zip(_params(reference), _params(workdir)):
    np.testing.assert_array_equal(a, b)
  loss = lambda d: [(r['step'], r['loss']) for r in read_metrics(d) if 'loss' in r]
  assert loss(workdir) == loss(reference)


@pytest.mark.slow
def test_sigterm_in_a_continual_sequence_resumes_to_the_same_r_matrix(tmp_path):
  reference = tmp_path / 'reference'
  assert run_cli('train.py', *CL_ARGS, f'--workdir={reference}').returncode == 0
  workdir = tmp_path / 'preempted'
  task2 = workdir / 'tasks' / '1_repeat_copy'
  code, out, err, _ = _terminate_when(CL_ARGS, workdir, lambda: _rows(task2) >= 2)
  assert code == 0, err
  assert re.search(r'SIGTERM: saved a checkpoint at step \d+ in .*1_repeat_copy', out), out
  proc = run_cli('train.py', *CL_ARGS, f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr
  want = json.loads((reference / 'continual.json').read_text())
  got = json.loads((workdir / 'continual.json').read_text())
  for key in ('R', 'ACC', 'BWT', 'forgetting'):
    assert got[key] == want[key], key
  record('sigterm', 'saved, exit 0, same R matrix', 'continual task 2')


def _start_and_wait_for_header(args, workdir):
  """train.py started; returns once its header line is out (compiling starts then)."""
  proc = subprocess.Popen([sys.executable, str(REPO / 'train.py'), *args, f'--workdir={workdir}'],
                          cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  header = proc.stdout.readline()
  assert header.startswith('memflax: '), header + proc.stderr.read()
  return proc


def test_sigterm_while_compiling_saves_step_0_and_a_second_one_stops_at_once(tmp_path):
  proc = _start_and_wait_for_header(ARGS, tmp_path / 'once')
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  assert 'SIGTERM: saved a checkpoint at step 0' in out
  assert (tmp_path / 'once' / 'checkpoints' / '0').is_dir()

  proc = _start_and_wait_for_header(ARGS, tmp_path / 'twice')
  proc.send_signal(signal.SIGTERM)
  time.sleep(0.2)
  sent = time.time()
  proc.send_signal(signal.SIGTERM)
  proc.communicate(timeout=300)
  assert proc.returncode == 128 + signal.SIGTERM
  assert time.time() - sent < 5, 'the second SIGTERM waited for the compile'
  record('sigterm', 'twice while compiling: stopped at once', 'compiling')
