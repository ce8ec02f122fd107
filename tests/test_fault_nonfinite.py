"""Non-finite values: an injected NaN gradient stops the run naming the step and the leaf,
or, with skip_nonfinite_updates, is skipped and counted; no checkpoint ever holds NaN."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import error_lines, read_metrics, run_cli
from fault_report import record
from memflax.checkpoint import Checkpointer

TINY = ['--config=configs/ntm_copy.py:tiny', '--config.num_train_steps=30',
        '--config.checkpoint_every_steps=10', '--config.log_every_steps=5',
        '--config.eval_every_steps=30', '--config.log.tensorboard=false']
# A leaf deep in tree order, so "first non-finite leaf" cannot be right by accident.
LEAF = "['cell']['controller']['gates']['bias']"


def _all_checkpoints_finite(workdir):
  """The steps of the workdir's checkpoints, after asserting every float in them is finite."""
  steps = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  for step in steps:
    checkpointer = ocp.StandardCheckpointer()
    path = workdir / 'checkpoints' / str(step) / 'state'
    try:
      # Onto this process's device: train.py wrote it over one device per core.
      device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
      target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                            checkpointer.metadata(path).item_metadata.tree)
      state = checkpointer.restore(path, target)
    finally:
      checkpointer.close()
    for leaf in jax.tree.leaves(state):
      leaf = np.asarray(leaf)
      if np.issubdtype(leaf.dtype, np.floating):
        assert np.isfinite(leaf).all(), f'step {step} holds a non-finite value'
  return steps


@pytest.mark.parametrize('at_step', [7, 17])
def test_nan_gradient_stops_naming_step_and_leaf(tmp_path, at_step):
  proc = run_cli('train.py', *TINY, f'--workdir={tmp_path}',
                 f'--config.debug.nan_grads_at_step={at_step}', '--config.debug.nan_grads_leaf=gates')
  lines = error_lines(proc)
  assert proc.returncode == 3 and len(lines) == 1, proc.stderr
  assert lines[0].startswith(f'error: non-finite gradient at step {at_step} '), lines[0]
  assert f'first non-finite leaf: params{LEAF}' in lines[0], lines[0]
  kept = (at_step - 1) // 10 * 10
  assert (f'last good checkpoint: step {kept}' if kept else 'last good checkpoint: none') \
      in lines[0]
  assert 'Traceback' not in proc.stderr
  # Nothing at or past the bad step was saved or logged as a training row.
  assert max(r['step'] for r in read_metrics(tmp_path)) < at_step
  if kept:
    assert _all_checkpoints_finite(tmp_path) == [kept]
  record('nan gradients', 'stopped, named step and leaf', f'step {at_step}')


def test_skip_nonfinite_updates_counts_and_keeps_checkpoints_finite(tmp_path):
  proc = run_cli('train.py', *TINY, f'--workdir={tmp_path}', '--config.debug.nan_grads_at_step=12',
                 '--config.skip_nonfinite_updates=true')
  assert proc.returncode == 0, proc.stderr
  rows = [r for r in read_metrics(tmp_path) if 'loss' in r]
  skipped = {r['step']: r['skipped_updates'] for r in rows}
  assert skipped == {5: 0, 10: 0, 15: 1, 20: 1, 25: 1, 30: 1}
  assert all(np.isfinite(r['loss']) for r in rows)
  assert _all_checkpoints_finite(tmp_path) == [10, 20, 30]
  record('nan gradients', 'skipped and counted', 'step 12, skip_nonfinite_updates')


def test_skipped_step_leaves_parameters_unchanged():
  """Step k skipped = the update of step k never happened: params after step k equal
  params after step k-1 (the next step then trains on batch k+1)."""
  from configs.ntm_copy import get_config
  from memflax.train import Trainer
  config = get_config('tiny')
  config.debug.nan_grads_at_step = 2
  config.skip_nonfinite_updates = True
  trainer = Trainer(config)
  state = trainer.init_state()
  steps = trainer.compile_train_steps(state, 0)
  state, _ = steps[trainer.step_bucket(0)](state)
  after_one = jax.device_get(state.params)
  state, metrics = steps[trainer.step_bucket(1)](state)
  assert int(metrics['skipped_updates']) == 1 and int(state.step) == 2
  assert not bool(state.nonfinite)
  for a, b in zip(jax.tree.leaves(after_one), jax.tree.leaves(jax.device_get(state.params))):
    np.testing.assert_array_equal(a, b)


def test_unknown_nan_leaf_is_a_config_error(tmp_path):
  proc = run_cli('train.py', *TINY, f'--workdir={tmp_path / "run"}',
                 '--config.debug.nan_grads_at_step=3', '--config.debug.nan_grads_leaf=no_such')
  lines = error_lines(proc)
  assert proc.returncode == 2 and len(lines) == 1
  assert lines[0].startswith("error: debug.nan_grads_leaf='no_such' names no parameter")
  assert not (tmp_path / 'run').exists()


def test_checkpointer_refuses_a_non_finite_state(tmp_path):
  checkpointer = Checkpointer(tmp_path)
  state = {'w': np.array([1.0, np.nan], np.float32)}
  try:
    with pytest.raises(ValueError, match=r"refusing to save step 3: state\['w'\] is not finite"):
      checkpointer.save(3, state, {})
  finally:
    checkpointer.close()
  assert not any((tmp_path / 'checkpoints').iterdir())
