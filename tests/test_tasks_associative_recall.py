"""The associative recall task's batches, loss and metric."""

import jax
import numpy as np
import pytest
from task_checks import (assert_batch_contract, assert_bce_scoring, assert_compiles_once,
                         assert_pure_function_of_key)

from memflax.tasks.associative_recall import Task

TASK = Task()  # the paper's setup: items of 3 six-bit vectors, 2..6 items


def test_hand_worked_example_with_three_items():
  batch = jax.device_get(TASK.make_batch(jax.random.PRNGKey(0), 1, min_items=3, max_items=3))
  x, y, m = batch['inputs'][0], batch['targets'][0], batch['mask'][0]
  assert x.shape == (20, 8) and y.shape == (20, 6)  # T = 4·3 + 2·3 + 2
  q = batch['query'][0]
  items = [x[4 * i + 1:4 * i + 4, :6] for i in range(3)]
  expected_x = np.zeros((20, 8), np.float32)
  for i in range(3):
    expected_x[4 * i, 6] = 1.0                     # item delimiter, then the item
    expected_x[4 * i + 1:4 * i + 4, :6] = items[i]
  expected_x[[12, 16], 7] = 1.0                    # query delimiters around the query
  expected_x[13:16, :6] = items[q]
  np.testing.assert_array_equal(x, expected_x)
  expected_y = np.zeros((20, 6), np.float32)
  expected_y[17:20] = items[q + 1]
  np.testing.assert_array_equal(y, expected_y)
  np.testing.assert_array_equal(m, [0] * 17 + [1] * 3)


def test_target_is_the_item_after_the_query_in_every_example():
  batch = jax.device_get(TASK.make_batch(jax.random.PRNGKey(3), 256))
  assert_batch_contract(TASK, batch)
  assert batch['inputs'].shape == (256, 32, 8)
  assert set(batch['num_items']) == set(range(2, 7))
  for b in range(256):
    n, x, y, m = batch['num_items'][b], batch['inputs'][b], batch['targets'][b], batch['mask'][b]
    # Read the episode back from the delimiter channels, as a model would.
    starts = np.flatnonzero(x[:, 6])
    np.testing.assert_array_equal(starts, 4 * np.arange(n))
    items = [x[s + 1:s + 4, :6] for s in starts]
    q0, q1 = np.flatnonzero(x[:, 7])
    assert (q0, q1) == (4 * n, 4 * n + 4)
    query = x[q0 + 1:q1, :6]
    match = [i for i, item in enumerate(items) if np.array_equal(item, query)]
    assert match and match[0] == batch['query'][b] and match[0] < n - 1  # never the last item
    np.testing.assert_array_equal(y[q1 + 1:q1 + 4], items[match[0] + 1])
    np.testing.assert_array_equal(m, (np.arange(32) > q1) & (np.arange(32) <= q1 + 3))
    np.testing.assert_array_equal(x[q1 + 1:], 0)
    np.testing.assert_array_equal(y[m == 0], 0)


def test_every_query_position_but_the_last_is_drawn():
  batch = jax.device_get(TASK.make_batch(jax.random.PRNGKey(4), 512, min_items=6, max_items=6))
  assert set(batch['query']) == set(range(5))


def test_bad_item_ranges_are_one_clear_error():
  with pytest.raises(ValueError, match='task.min_items'):
    Task(min_items=1)
  with pytest.raises(ValueError, match='task.max_items must be an integer'):
    Task(max_items='6')
  with pytest.raises(ValueError, match='min_items'):
    TASK.make_batch(jax.random.PRNGKey(0), 2, min_items=7, max_items=4)


def test_longer_episodes_for_generalisation_probes():
  batch = TASK.make_batch(jax.random.PRNGKey(0), 4, min_items=12, max_items=12)
  assert batch['inputs'].shape == (4, 4 * 12 + 8, 8)
  np.testing.assert_array_equal(batch['num_items'], 12)


def test_batches_are_a_pure_function_of_the_key():
  assert_pure_function_of_key(TASK)


def test_jit_compiles_once():
  assert_compiles_once(TASK)


def test_loss_and_bit_errors_match_numpy():
  assert_bce_scoring(TASK, TASK.make_batch(jax.random.PRNGKey(1), 16))
