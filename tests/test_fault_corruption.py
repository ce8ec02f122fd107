"""Corrupt checkpoints and snapshots: every file of the newest checkpoint and of a snapshot
truncated, zero-filled or with one flipped bit is either detected (one warning, the run
falls back to the previous good one, the damaged one kept aside) or provably harmless (what
loads is bit-for-bit what was saved); never loaded as different numbers. With no good
checkpoint left, one error and nothing moved; a newer format is refused by name."""

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import error_lines, run_cli
from fault_report import record
from memflax import integrity
from memflax.checkpoint import QUARANTINE_DIR, Checkpointer, NoGoodCheckpointError
from memflax.continual import runner, snapshots

MODES = ('truncate', 'zero', 'flip')
TINY = ['--config=configs/ntm_copy.py:tiny', '--config.num_train_steps=20',
        '--config.checkpoint_every_steps=10', '--config.log.tensorboard=false']


def corrupt(path: Path, mode: str) -> None:
  """Damages one file in place (snapshot files are read-only: make it writable first)."""
  os.chmod(path, os.stat(path).st_mode | stat.S_IWUSR)
  data = bytearray(path.read_bytes())
  if mode == 'truncate':
    data = data[:len(data) // 2]
  elif mode == 'zero':
    data = bytearray(len(data))
  else:  # one bit in the middle: what orbax's own checks miss inside compressed chunks
    data[len(data) // 2] ^= 0x10
  path.write_bytes(bytes(data))


def tree_hash(root: Path) -> str:
  """Paths and bytes of everything under root but the run lock (which records the pid of
  whichever run holds it last)."""
  h = hashlib.sha256()
  for p in sorted(root.rglob('*')):
    if p.name.startswith('.lock-'):
      continue
    h.update(str(p.relative_to(root)).encode())
    if p.is_file():
      h.update(p.read_bytes())
  return h.hexdigest()


def host(tree):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A run with checkpoints at steps 10 and 20, its trainer, and both states."""
  from configs.ntm_copy import get_config
  from memflax.train import Trainer
  workdir = tmp_path_factory.mktemp('trained')
  assert run_cli('train.py', *TINY, f'--workdir={workdir}').returncode == 0
  trainer = Trainer(get_config('tiny'))
  abstract = trainer.abstract_state()
  states = {}
  for step in (20, 10):
    copy = tmp_path_factory.mktemp(f'only{step}')
    shutil.copytree(workdir / 'checkpoints' / str(step), copy / 'checkpoints' / str(step))
    checkpointer = Checkpointer(copy)
    try:
      state, got, _ = checkpointer.restore_newest(abstract)
    finally:
      checkpointer.close()
    assert got == step
    states[step] = host(state)
  return workdir, abstract, states


def _restore(workdir, abstract):
  checkpointer = Checkpointer(workdir)
  try:
    state, step, _ = checkpointer.restore_newest(abstract)
  finally:
    checkpointer.close()
  return host(state), step


@pytest.mark.parametrize('mode', MODES)
def test_each_checkpoint_file_corrupted_is_detected_or_harmless(trained, tmp_path, capsys, mode):
  workdir, abstract, states = trained
  newest = workdir / 'checkpoints' / '20'
  files = sorted(p.relative_to(newest) for p in newest.rglob('*') if p.is_file())
  assert len(files) >= 10
  outcomes = {}
  for i, relative in enumerate(files):
    trial = tmp_path / str(i)
    shutil.copytree(workdir / 'checkpoints', trial / 'checkpoints')
    corrupt(trial / 'checkpoints' / '20' / relative, mode)
    damaged = (trial / 'checkpoints' / '20' / relative).read_bytes()
    capsys.readouterr()
    leaves, step = _restore(trial, abstract)
    warnings = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    if step == 20:  # not detected: then what loaded must be exactly what was saved
      assert not warnings
      for a, b in zip(leaves, states[20]):
        np.testing.assert_array_equal(a, b, err_msg=f'{mode} {relative} loaded as garbage')
      outcomes[str(relative)] = 'harmless'
    else:
      assert step == 10, (mode, relative, step)
      for a, b in zip(leaves, states[10]):
        np.testing.assert_array_equal(a, b)
      assert len(warnings) == 1 and warnings[0].startswith(
          'warning: checkpoint at step 20 is corrupt'), warnings
      kept = list((trial / QUARANTINE_DIR).iterdir())
      assert len(kept) == 1 and (kept[0] / relative).read_bytes() == damaged  # kept as it was
      outcomes[str(relative)] = 'detected'
    record('corrupt checkpoint', outcomes[str(relative)], f'{mode} {relative}')
  # What orbax alone would load silently (a flipped bit in the array data) or misread
  # (the JSON documents) is caught by the integrity record.
  data = max(files, key=lambda r: (newest / r).stat().st_size)
  for relative in (data, Path('config/metadata'), Path('progress/metadata'),
                   Path(integrity.ITEM) / 'metadata'):
    assert outcomes[str(relative)] == 'detected', (mode, relative)


def test_no_good_checkpoint_is_one_error_and_moves_nothing(trained, tmp_path):
  workdir, _, _ = trained
  run = tmp_path / 'run'
  shutil.copytree(workdir, run)
  for step in (10, 20):
    corrupt(run / 'checkpoints' / str(step) / 'state' / '_METADATA', 'zero')
  before = tree_hash(run)
  proc = run_cli('train.py', *TINY, f'--workdir={run}', '--config.num_train_steps=30')
  lines = error_lines(proc)
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr
  assert lines[0].startswith(f'error: no checkpoint in {run / "checkpoints"} is readable (step 20: ')
  assert 'nothing was moved or deleted' in lines[0]
  assert tree_hash(run) == before
  record('corrupt checkpoint', 'none good: one error, nothing moved', 'zero every step')


def test_no_good_checkpoint_raises_in_process(trained, tmp_path):
  workdir, abstract, _ = trained
  shutil.copytree(workdir / 'checkpoints', tmp_path / 'checkpoints')
  for step in (10, 20):
    corrupt(tmp_path / 'checkpoints' / str(step) / integrity.ITEM / 'metadata', 'flip')
  with pytest.raises(NoGoodCheckpointError):
    _restore(tmp_path, abstract)
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == ['10', '20']


def test_checkpoint_of_a_newer_format_is_refused_by_name(trained, tmp_path):
  workdir, _, _ = trained
  run = tmp_path / 'run'
  shutil.copytree(workdir, run)
  path = run / 'checkpoints' / '20' / integrity.ITEM / 'metadata'
  stored = json.loads(path.read_text())
  path.write_text(json.dumps({**stored, 'format_version': integrity.FORMAT_VERSION + 1}))
  before = tree_hash(run)
  proc = run_cli('train.py', *TINY, f'--workdir={run}', '--config.num_train_steps=30')
  lines = error_lines(proc)
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr
  assert f'checkpoint format {integrity.FORMAT_VERSION + 1} by a newer memflax' in lines[0]
  assert tree_hash(run) == before


def test_a_single_flipped_bit_changes_the_digest():
  a = np.arange(64, dtype=np.float32)
  b = a.copy()
  b.view(np.uint8)[100] ^= 1
  assert integrity.digest_array(a) != integrity.digest_array(b)
  assert integrity.digest_array(a) != integrity.digest_array(a.astype(np.float64))
  assert integrity.digest_array(a) != integrity.digest_array(a.reshape(8, 8))
  record_ = integrity.make_record({'t': {'x': a}}, {'d': {'k': 1}})
  integrity.check_tree(record_, 't', {'x': a})
  with pytest.raises(integrity.CorruptError, match=r"t\['x'\] does not match"):
    integrity.check_tree(record_, 't', {'x': b})
  with pytest.raises(integrity.CorruptError):
    integrity.check_document(record_, 'd', {'k': 2})


# ------------------------------------------------------------------ Snapshots
CL = ['--config=configs/cl_ntm_tasks.py:tiny', '--config.continual.strategy=replay',
      '--config.num_train_steps=10', '--config.checkpoint_every_steps=10',
      '--config.eval_every_steps=10', '--config.eval.num_sequences=32',
      '--config.continual.replay_buffer_size=16', '--config.log.tensorboard=false']


@pytest.fixture(scope='module')
def sequence(tmp_path_factory):
  from configs import cl_ntm_tasks
  workdir = tmp_path_factory.mktemp('sequence')
  proc = run_cli('train.py', *CL, f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr
  config = cl_ntm_tasks.get_config('tiny')
  abstract = runner.Sequence(config).trainer(0).abstract_state()
  return workdir, {'params': abstract.params, 'opt_state': abstract.opt_state}


@pytest.mark.parametrize('mode', MODES)
def test_each_snapshot_file_corrupted_is_detected_or_harmless(sequence, tmp_path, mode):
  workdir, abstract = sequence
  original = workdir / 'snapshots' / '1_repeat_copy'
  files = sorted(p.relative_to(original) for p in original.rglob('*') if p.is_file())
  outcomes = {}
  for i, relative in enumerate(files):
    copy = tmp_path / str(i)
    shutil.copytree(original, copy)
    corrupt(copy / relative, mode)
    try:
      snapshots.verify(copy, abstract)  # passes only if every array and document matches
      outcomes[str(relative)] = 'harmless'
    except snapshots.SnapshotCorruptError as e:
      assert str(e).startswith(f'snapshot {copy} is corrupt: ')
      outcomes[str(relative)] = 'detected'
    record('corrupt snapshot', outcomes[str(relative)], f'{mode} {relative}')
  for item in ('params', 'opt_state', 'replay'):
    data = max((r for r in files if r.parts[0] == item),
               key=lambda r: (original / r).stat().st_size)
    assert outcomes[str(data)] == 'detected', (mode, data)
  assert outcomes['meta/metadata'] == outcomes[f'{integrity.ITEM}/metadata'] == 'detected'


def test_corrupt_snapshot_is_set_aside_and_rebuilt_bit_for_bit(sequence, tmp_path):
  workdir, _ = sequence
  run = tmp_path / 'run'
  shutil.copytree(workdir, run)
  snap = run / 'snapshots' / '0_copy'
  record_before = (snap / integrity.ITEM / 'metadata').read_text()
  data = max((p for p in (snap / 'params').rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)
  corrupt(data, 'flip')

  # Evaluating it is refused in one line.
  proc = run_cli('eval.py', f'--workdir={run}', '--snapshot=0')
  lines = error_lines(proc)
  assert proc.returncode == 2 and len(lines) == 1 and 'is corrupt' in lines[0], proc.stderr

  proc = run_cli('train.py', *CL, f'--workdir={run}')
  assert proc.returncode == 0, proc.stderr
  warnings = [l for l in error_lines(proc) if l.startswith('warning:')]
  assert len(warnings) == 1 and 'snapshot' in warnings[0] and 'rebuilding it' in warnings[0]
  assert len(list((run / runner.CORRUPT_SNAPSHOTS_DIR).iterdir())) == 1
  # Same digests of every array and of the metadata: the rebuilt snapshot is the original.
  assert json.loads((snap / integrity.ITEM / 'metadata').read_text()) == json.loads(record_before)
  assert json.loads((run / 'continual.json').read_text())['R'] == \
      json.loads((workdir / 'continual.json').read_text())['R']
  record('corrupt snapshot', 'set aside and rebuilt bit for bit', 'flip params data')
