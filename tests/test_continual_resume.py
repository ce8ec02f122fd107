"""Continual runs resume exactly after SIGKILL mid-sequence, and 8 devices or two processes
measure the same R matrix as one device."""

import json
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import portpicker
import pytest

from conftest import REPO, cli_env, run_cli
from configs import cl_ntm_tasks
from memflax.continual import runner, snapshots

CONFIG = '--config=configs/cl_ntm_tasks.py:tiny'
# Replay is the strategy with the most state (the buffer lives in the snapshots).
RESUME = [CONFIG, '--config.continual.strategy=replay', '--config.num_train_steps=60',
          '--config.checkpoint_every_steps=10', '--config.log_every_steps=10',
          '--config.eval_every_steps=60', '--config.eval.num_sequences=64',
          '--config.continual.replay_buffer_size=32']


def _final_params(workdir):
  config = cl_ntm_tasks.get_config('tiny')
  seq = runner.Sequence(config)
  path = snapshots.list_snapshots(workdir)[-1][2]
  return jax.device_get(snapshots.restore_params(path, seq.abstract_params()))


@pytest.mark.slow
def test_sigkill_during_task_two_then_resume_is_bit_exact(tmp_path):
  reference = tmp_path / 'reference'
  proc = run_cli('train.py', *RESUME, f'--workdir={reference}')
  assert proc.returncode == 0, proc.stderr

  workdir = tmp_path / 'killed'
  task1 = workdir / 'tasks' / '1_repeat_copy' / 'checkpoints'
  proc = subprocess.Popen([sys.executable, str(REPO / 'train.py'), *RESUME,
                           f'--workdir={workdir}'], cwd=REPO, env=cli_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 900
  # Kill once task 2 (index 1) has a step checkpoint: mid-task, snapshot 0 written.
  while time.time() < deadline and proc.poll() is None:
    if task1.is_dir() and any(p.name.isdigit() for p in task1.iterdir()):
      proc.send_signal(signal.SIGKILL)
      break
    time.sleep(0.01)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, 'the run ended before it could be killed mid-task'
  assert [n for _, n, _ in snapshots.list_snapshots(workdir)] == ['0_copy']
  snap0 = {p: p.read_bytes() for p in (workdir / 'snapshots' / '0_copy').rglob('*') if p.is_file()}

  proc = run_cli('train.py', *RESUME, f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr
  assert 'resumed from step' in proc.stdout
  # Task 1's snapshot was not touched by the resumed run.
  assert {p: p.read_bytes() for p in snap0} == snap0
  want = json.loads((reference / 'continual.json').read_text())
  got = json.loads((workdir / 'continual.json').read_text())
  for key in ('R', 'R_bit_errors_per_seq', 'ACC', 'BWT', 'FWT', 'forgetting'):
    assert got[key] == want[key], key
  for a, b in zip(jax.tree.leaves(_final_params(reference)), jax.tree.leaves(_final_params(workdir))):
    np.testing.assert_array_equal(a, b)
  # The replay buffers are identical too.
  for _, name, path in snapshots.list_snapshots(reference):
    ra, rb = snapshots.restore_replay(path), snapshots.restore_replay(workdir / 'snapshots' / name)
    for a, b in zip(jax.tree.leaves(ra), jax.tree.leaves(rb)):
      np.testing.assert_array_equal(a, b)


SEQUENCE_ARGS = [CONFIG, '--config.continual.strategy=replay', '--config.num_train_steps=40',
                 '--config.batch_size=16', '--config.checkpoint_every_steps=20',
                 '--config.log_every_steps=20', '--config.eval_every_steps=40',
                 '--config.eval.num_sequences=64', '--config.continual.replay_buffer_size=32',
                 '--config.continual.replay_batch_size=8']


@pytest.fixture(scope='module')
def one_device_result(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('one_device')
  proc = run_cli('train.py', *SEQUENCE_ARGS, f'--workdir={workdir}', devices=1)
  assert proc.returncode == 0, proc.stderr
  result = json.loads((workdir / 'continual.json').read_text())
  r = np.array(result['R'])
  assert r[1:].max() > r[0].max()  # it trained: not a comparison of two no-ops
  return result


def assert_same_sequence_result(other: dict, one: dict) -> None:
  # Accuracy counts thresholded bits, so a logit that float summation order moves across
  # 0 flips one bit of 64 sequences' answers: allow a few such flips.
  np.testing.assert_allclose(np.array(other['R']), np.array(one['R']), atol=3e-3)
  for key in ('ACC', 'BWT', 'forgetting'):
    assert other[key] == pytest.approx(one[key], abs=3e-3)


@pytest.mark.slow
def test_eight_devices_give_the_same_r_matrix(tmp_path, one_device_result):
  proc = run_cli('train.py', *SEQUENCE_ARGS, f'--workdir={tmp_path}', devices=8)
  assert proc.returncode == 0, proc.stderr
  assert '8 device(s)' in proc.stdout
  assert_same_sequence_result(json.loads((tmp_path / 'continual.json').read_text()),
                              one_device_result)


@pytest.mark.slow
def test_two_processes_give_the_same_r_matrix(tmp_path, one_device_result):
  # jax.distributed on 127.0.0.1 with gloo: one device per process, every task's steps,
  # evaluations, replay buffer and snapshot shared by both processes.
  port = portpicker.pick_unused_port()
  procs = [subprocess.Popen(
      [sys.executable, str(REPO / 'train.py'), *SEQUENCE_ARGS, f'--workdir={tmp_path}',
       f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}'],
      cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=900)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [o[-3000:] for o in outputs]
  assert '2 device(s), 2 process(es)' in outputs[0]
  assert outputs[0].strip().splitlines()[-1].startswith('done: continual (replay)')
  assert 'done: continual' not in outputs[1]  # process 0 alone reports and writes
  assert_same_sequence_result(json.loads((tmp_path / 'continual.json').read_text()),
                              one_device_result)
