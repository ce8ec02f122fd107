"""One run per workdir, relative workdirs, and metrics that read as one run after a resume."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, cli_env, error_lines, read_metrics, run_cli
from memflax import workdir as workdir_lib

TINY = '--config=configs/ntm_copy.py:tiny'


def _snapshot(root: Path) -> dict[str, str]:
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob('*')) if p.is_file()}


def test_resolve_makes_relative_paths_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert workdir_lib.resolve('runs/x') == tmp_path / 'runs' / 'x'
  (tmp_path / 'file').write_text('x')
  for bad in ('file', 'file/below'):
    with pytest.raises(workdir_lib.WorkdirError, match='is not a directory'):
      workdir_lib.resolve(bad)


def test_lock_is_exclusive_and_released(tmp_path):
  with workdir_lib.RunLock(tmp_path):
    with pytest.raises(workdir_lib.WorkdirError, match='in use by a running training'):
      workdir_lib.RunLock(tmp_path).acquire()
  workdir_lib.RunLock(tmp_path).acquire().release()  # free again once released


def test_second_run_on_a_workdir_is_refused_and_changes_nothing(tmp_path):
  workdir = tmp_path / 'run'
  assert run_cli('train.py', TINY, f'--workdir={workdir}', '--config.num_train_steps=10',
                 '--config.checkpoint_every_steps=10').returncode == 0
  # Another process holds the run's lock, as a training in progress does.
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time; from memflax.workdir import RunLock; '
       f'held = RunLock(sys.argv[1]).acquire(); print("held", flush=True); time.sleep(120)', str(workdir)],
      env=cli_env(), stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    before = _snapshot(workdir)
    proc = run_cli('train.py', TINY, f'--workdir={workdir}', '--config.num_train_steps=20')
  finally:
    holder.kill()
    holder.wait()
  assert proc.returncode == 2
  lines = error_lines(proc)
  assert len(lines) == 1 and 'is in use by a running training (pid' in lines[0], lines
  assert _snapshot(workdir) == before
  # The holder was killed: its lock went with it, and training continues.
  assert run_cli('train.py', TINY, f'--workdir={workdir}', '--config.num_train_steps=20',
                 '--config.checkpoint_every_steps=10').returncode == 0


def test_relative_workdir_from_another_directory(tmp_path):
  proc = subprocess.run([sys.executable, str(REPO / 'train.py'), f'--config={REPO}/configs/ntm_copy.py:tiny',
                         '--workdir=runs/rel', '--config.num_train_steps=10',
                         '--config.checkpoint_every_steps=5'],
                        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr
  assert sorted(p.name for p in (tmp_path / 'runs/rel/checkpoints').iterdir()) == ['10', '5']
  last = proc.stdout.strip().splitlines()[-1]
  assert last.startswith('done: ntm on copy, step 10') and str(tmp_path / 'runs/rel') in last
  proc = subprocess.run([sys.executable, str(REPO / 'eval.py'), '--workdir=runs/rel',
                         '--num_sequences=16', '--lengths=3'], cwd=tmp_path, env=cli_env(),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr
  assert (tmp_path / 'runs/rel/eval.json').is_file()


def test_resume_moves_rows_past_the_checkpoint_and_carries_training_time(tmp_path):
  workdir = tmp_path / 'run'
  common = [TINY, f'--workdir={workdir}', '--config.checkpoint_every_steps=10',
            '--config.log_every_steps=2', '--config.eval_every_steps=10']
  assert run_cli('train.py', *common, '--config.num_train_steps=20').returncode == 0
  first = read_metrics(workdir)
  time_at_10 = next(r['train_time_s'] for r in first if r['step'] == 10 and 'loss' in r)
  # As if killed after logging steps 11..20 but before checkpoint 20 was written.
  shutil.rmtree(workdir / 'checkpoints' / '20')
  proc = run_cli('train.py', *common, '--config.num_train_steps=20')
  assert proc.returncode == 0, proc.stderr
  assert 'resumed from step 10' in proc.stdout

  rows = read_metrics(workdir)
  train_steps = [r['step'] for r in rows if 'loss' in r]
  assert train_steps == list(range(2, 21, 2))  # each step once, in order
  assert [r['step'] for r in rows if 'eval_loss' in r] == [10, 20]
  superseded = [l for l in (workdir / 'metrics_superseded.jsonl').read_text().splitlines()]
  assert len(superseded) == len([r for r in first if r['step'] > 10]) > 0
  times = [r['train_time_s'] for r in rows if 'loss' in r]
  assert times == sorted(times) and times[5] > time_at_10  # step 12 continues the clock
