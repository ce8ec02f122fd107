"""A growing curriculum: the cap follows the running metric, batches respect it, resume is exact."""

import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import error_lines, read_metrics, run_cli
from memflax import curriculum, evaluate, tasks

TINY = '--config=configs/ntm_copy.py:tiny'
GROW = ['--config.curriculum.kind=grow', '--config.curriculum.threshold=20',
        '--config.curriculum.min_steps=5', '--config.log_every_steps=5']


def _config(**fields):
  c = ml_collections.ConfigDict()
  c.curriculum = ml_collections.ConfigDict(dict(kind='grow', start=2, increment=2,
                                                threshold=1.0, min_steps=3, decay=0.5))
  c.curriculum.update(fields)
  return c


def test_cap_grows_only_after_min_steps_of_good_enough_batches():
  config = _config()
  state = curriculum.initial_state(config)
  levels = []
  for value in [5.0, 0.5, 0.5, 0.5, 0.2, 0.2, 0.2, 9.0, 9.0, 9.0, 9.0]:
    state = curriculum.update(state, jnp.float32(value), config, False, cap=5)
    levels.append(int(state['level']))
  # Running means (decay 0.5, bias-corrected): 5, 2, 1.14, 0.8 -> grow at step 4, cap 4;
  # 0.2 ×3 -> grow again, capped at 5; bad batches never shrink the cap.
  assert levels == [2, 2, 2, 4, 4, 4, 5, 5, 5, 5, 5]
  higher = curriculum.update(curriculum.initial_state(config), jnp.float32(0.5), _config(
      threshold=0.9, min_steps=1), True, cap=5)
  assert int(higher['level']) == 2  # accuracy 0.5 is not good enough when higher is better


@pytest.mark.parametrize('name, count', [('copy', 'lengths'), ('repeat_copy', 'lengths'),
                                         ('associative_recall', 'num_items')])
def test_level_caps_sizes_without_changing_shapes(name, count):
  task = tasks.build(ml_collections.ConfigDict({'name': name}))
  key = jax.random.PRNGKey(3)
  full = task.make_batch(key, 256)
  capped = task.make_batch(key, 256, level=jnp.int32(3))
  assert capped['inputs'].shape == full['inputs'].shape
  assert int(capped[count].max()) == 3 and int(full[count].max()) > 3
  uncapped = task.make_batch(key, 256, level=jnp.int32(1000))
  np.testing.assert_array_equal(uncapped['inputs'], full['inputs'])


def test_grow_on_a_task_without_a_size_range_is_one_line(tmp_path):
  proc = run_cli('train.py', '--config=configs/ntm_priority_sort.py:tiny',
                 f'--workdir={tmp_path / "r"}',
                 '--config.curriculum.kind=grow')
  assert proc.returncode == 2
  lines = error_lines(proc)
  assert len(lines) == 1 and 'curriculum.kind=grow needs a task' in lines[0], lines
  assert not (tmp_path / 'r').exists()


def test_growing_run_resumes_exactly(tmp_path):
  reference = tmp_path / 'reference'
  common = [TINY, *GROW, '--config.num_train_steps=40', '--config.checkpoint_every_steps=20']
  assert run_cli('train.py', *common, f'--workdir={reference}').returncode == 0
  levels = [r['curriculum_level'] for r in read_metrics(reference) if 'curriculum_level' in r]
  assert levels[0] == 2 and levels[-1] > 2  # it grew, so the resume has something to keep
  workdir = tmp_path / 'resumed'
  shutil.copytree(reference, workdir, ignore=shutil.ignore_patterns('40', '.lock-*'))
  proc = run_cli('train.py', *common, f'--workdir={workdir}')
  assert proc.returncode == 0 and 'resumed from step 20' in proc.stdout, proc.stderr
  assert [r['curriculum_level'] for r in read_metrics(workdir)
          if 'curriculum_level' in r] == levels
  _, expected, _ = evaluate.restore(reference)
  _, actual, _ = evaluate.restore(workdir)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(actual)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
