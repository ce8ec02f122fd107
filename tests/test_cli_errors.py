"""Bad input ends with one clear line, a non-zero exit, and nothing saved touched."""

import hashlib
from pathlib import Path

import pytest

from conftest import error_lines, read_metrics, run_cli

TINY = '--config=configs/ntm_copy.py:tiny'


def _snapshot(root: Path) -> dict[str, str]:
  """Every file under root with a hash of its contents."""
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.mark.parametrize('override, expected', [
    ('--config.model.memroy_size=3', "unknown config field '--config.model.memroy_size'"),
    ('--config.model.memory_size=-3', 'model.memory_size must be a positive integer'),
    ('--config.model.memory_init=zeros', "error: model.memory_init must be one of"),
    ('--config.optimizer=sgdd', 'optimizer must be one of'),
    ('--config.adam_eps=0.0', 'adam_eps must be > 0, got 0.0'),
])
def test_bad_config_fails_before_writing(tmp_path, override, expected):
  workdir = tmp_path / 'run'
  proc = run_cli('train.py', TINY, f'--workdir={workdir}', override)
  assert proc.returncode == 2, proc.stderr
  lines = error_lines(proc)
  assert len(lines) == 1 and lines[0].startswith('error: ') and expected in lines[0], lines
  assert not workdir.exists()


def test_batch_not_divisible_by_device_count(tmp_path):
  workdir = tmp_path / 'run'
  proc = run_cli('train.py', TINY, f'--workdir={workdir}', '--config.batch_size=12', devices=8)
  assert proc.returncode == 2
  lines = error_lines(proc)
  assert lines == ['error: batch_size 12 is not divisible by the device count 8'], lines
  assert not workdir.exists()


@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory):
  """A tiny NTM run of 20 steps with checkpoints at 10 and 20."""
  workdir = tmp_path_factory.mktemp('trained')
  proc = run_cli('train.py', TINY, f'--workdir={workdir}', '--config.num_train_steps=20',
                 '--config.checkpoint_every_steps=10')
  assert proc.returncode == 0, proc.stderr
  return workdir


def test_incompatible_checkpoint_is_refused_and_kept(trained_workdir):
  before = _snapshot(trained_workdir)
  proc = run_cli('train.py', '--config=configs/lstm_copy.py:tiny', f'--workdir={trained_workdir}')
  assert proc.returncode == 2
  lines = error_lines(proc)
  assert len(lines) == 1 and 'holds a checkpoint of a different model' in lines[0], lines
  proc = run_cli('train.py', TINY, f'--workdir={trained_workdir}', '--config.model.memory_size=32')
  assert proc.returncode == 2 and 'different model' in error_lines(proc)[0]
  assert _snapshot(trained_workdir) == before


def test_eval_on_a_task_sequence_workdir_points_to_its_snapshots(tmp_path):
  (tmp_path / 'snapshots' / '0_copy').mkdir(parents=True)
  proc = run_cli('eval.py', f'--workdir={tmp_path}')
  lines = error_lines(proc)
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr
  assert 'task sequence' in lines[0] and '--snapshot=' in lines[0]


def test_eval_without_checkpoint(tmp_path):
  proc = run_cli('eval.py', f'--workdir={tmp_path}')
  assert proc.returncode != 0
  lines = error_lines(proc)
  assert len(lines) == 1 and lines[0].startswith('error: no checkpoint in'), lines


def test_nonfinite_stops_run_and_keeps_last_good_checkpoint(trained_workdir, tmp_path):
  # Resume the 20-step run with a learning rate that overflows the parameters.
  import shutil
  workdir = tmp_path / 'run'
  shutil.copytree(trained_workdir, workdir)
  before = _snapshot(workdir / 'checkpoints')
  proc = run_cli('train.py', TINY, f'--workdir={workdir}', '--config.learning_rate=1e38',
                 '--config.grad_clip_norm=0')
  assert proc.returncode == 3
  lines = [l for l in error_lines(proc) if l.startswith('error:')]
  assert len(lines) == 1 and 'non-finite' in lines[0] and 'last good checkpoint: step 20' in lines[0]
  assert _snapshot(workdir / 'checkpoints') == before
  assert max(r['step'] for r in read_metrics(workdir)) < 100


def test_workdir_that_is_a_file(tmp_path):
  target = tmp_path / 'notes.txt'
  target.write_text('keep me')
  proc = run_cli('train.py', TINY, f'--workdir={target}')
  assert proc.returncode == 2
  lines = error_lines(proc)
  assert len(lines) == 1 and 'exists and is not a directory' in lines[0], lines
  assert target.read_text() == 'keep me'


def test_unknown_config_variant_names_the_reason(tmp_path):
  proc = run_cli('train.py', '--config=configs/ntm_copy.py:small', f'--workdir={tmp_path / "r"}')
  assert proc.returncode == 2
  lines = error_lines(proc)
  assert len(lines) == 1 and "unknown config variant 'small'" in lines[0] and 'tiny' in lines[0]
  assert not (tmp_path / 'r').exists()


@pytest.mark.parametrize('script', ['train.py', 'eval.py'])
def test_help_exits_zero(script):
  proc = run_cli(script, '--help')
  assert proc.returncode == 0 and '--workdir' in proc.stdout and not proc.stderr.strip()


def test_missing_required_flags_are_one_line():
  for script in ('train.py', 'eval.py'):
    proc = run_cli(script)
    assert proc.returncode == 2
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith('error: --') and 'required' in lines[0], lines


def test_list_names_models_tasks_and_configs():
  proc = run_cli('train.py', '--list')
  assert proc.returncode == 0, proc.stderr
  out = proc.stdout
  for name in ('ntm', 'dnc', 'transformer', 'copy', 'ntm_copy.py', 'lstm_copy.py', 'tiny'):
    assert name in out, out


@pytest.mark.parametrize('lengths, expected', [
    ('10,abc', "'abc' is not an integer"),
    ('0', 'lengths must be positive integers'),
    ('', 'lengths must be positive integers'),
])
def test_eval_bad_lengths_write_nothing(trained_workdir, lengths, expected):
  before = _snapshot(trained_workdir)
  proc = run_cli('eval.py', f'--workdir={trained_workdir}', f'--lengths={lengths}')
  assert proc.returncode == 2
  lines = error_lines(proc)
  assert len(lines) == 1 and lines[0].startswith('error: ') and expected in lines[0], lines
  assert _snapshot(trained_workdir) == before
