"""The repeat copy task's batches, count normalisation, loss and metric."""

import jax
import numpy as np
import pytest
from task_checks import (assert_batch_contract, assert_bce_scoring, assert_compiles_once,
                         assert_pure_function_of_key)

from memflax.tasks.repeat_copy import Task

TASK = Task()  # the paper's setup: 8 bits, lengths 1..10, repeats 1..10


def test_count_normalisation_has_zero_mean_unit_variance_over_the_training_range():
  # μ = 5.5, σ² = (10² − 1)/12 = 8.25 for repeats uniform on 1..10.
  np.testing.assert_allclose(TASK.normalised_repeats(np.float64(1)), -4.5 / np.sqrt(8.25))
  np.testing.assert_allclose(TASK.normalised_repeats(np.float64(10)), 4.5 / np.sqrt(8.25))
  counts = TASK.normalised_repeats(np.arange(1, 11, dtype=np.float64))
  np.testing.assert_allclose([counts.mean(), counts.var()], [0.0, 1.0], atol=1e-12)
  # A probe outside the range keeps the training scale: 20 repeats ↦ 14.5/σ.
  np.testing.assert_allclose(TASK.normalised_repeats(np.float64(20)), 14.5 / np.sqrt(8.25))
  np.testing.assert_allclose(Task(min_repeats=4, max_repeats=4).normalised_repeats(4.0), 0.0)


def test_hand_worked_example_two_vectors_three_times():
  batch = jax.device_get(TASK.make_batch(jax.random.PRNGKey(0), 1, min_length=2, max_length=2,
                                         min_repeats=3, max_repeats=3))
  x, y, m = batch['inputs'][0], batch['targets'][0], batch['mask'][0]
  assert x.shape == (10, 10) and y.shape == (10, 9)  # T = 2 + 2 + 2·3
  v = x[:2, :8]
  r = (3 - 5.5) / np.sqrt(8.25)
  expected_x = np.zeros((10, 10), np.float32)
  expected_x[:2, :8] = v
  expected_x[2, 8:] = [1.0, r]
  np.testing.assert_allclose(x, expected_x, rtol=1e-6)
  expected_y = np.zeros((10, 9), np.float32)
  expected_y[3:9, :8] = np.concatenate([v, v, v])
  expected_y[9, 8] = 1.0  # end marker right after the third copy
  np.testing.assert_array_equal(y, expected_y)
  np.testing.assert_array_equal(m, [0, 0, 0, 1, 1, 1, 1, 1, 1, 1])


def test_layout_of_random_lengths_and_counts():
  batch = jax.device_get(TASK.make_batch(jax.random.PRNGKey(3), 64))
  assert_batch_contract(TASK, batch)
  assert batch['inputs'].shape == (64, 112, 10) and batch['targets'].shape == (64, 112, 9)
  assert set(batch['lengths']) <= set(range(1, 11)) and len(set(batch['lengths'])) > 5
  assert set(batch['repeats']) <= set(range(1, 11)) and len(set(batch['repeats'])) > 5
  steps = np.arange(112)
  for b in range(64):
    n, r = batch['lengths'][b], batch['repeats'][b]
    x, y, m = batch['inputs'][b], batch['targets'][b], batch['mask'][b]
    end = n + 1 + n * r
    np.testing.assert_array_equal(x[:, 8], steps == n)                     # delimiter
    np.testing.assert_allclose(x[:, 9], (steps == n) * (r - 5.5) / np.sqrt(8.25), rtol=1e-6)
    np.testing.assert_array_equal(x[n:, :8], 0)                            # silent after reading
    np.testing.assert_array_equal(y[n + 1:end, :8], np.tile(x[:n, :8], (r, 1)))
    np.testing.assert_array_equal(y[:, 8], steps == end)                   # end marker
    np.testing.assert_array_equal(m, (steps > n) & (steps <= end))
    np.testing.assert_array_equal(y[m == 0], 0)


def test_generalisation_probe_overrides_lengths_and_counts():
  batch = TASK.make_batch(jax.random.PRNGKey(0), 4, min_length=12, max_length=12,
                          min_repeats=15, max_repeats=15)
  assert batch['inputs'].shape == (4, 12 + 2 + 12 * 15, 10)
  np.testing.assert_array_equal(batch['mask'].sum(1), 12 * 15 + 1)
  np.testing.assert_allclose(batch['inputs'][:, 12, 9], (15 - 5.5) / np.sqrt(8.25), rtol=1e-6)


def test_bad_repeat_range_is_one_clear_error():
  with pytest.raises(ValueError, match='task.min_repeats'):
    Task(min_repeats=5, max_repeats=2)
  with pytest.raises(ValueError, match='task.max_repeats must be an integer'):
    Task(max_repeats=2.5)


def test_batches_are_a_pure_function_of_the_key():
  assert_pure_function_of_key(TASK)


def test_jit_compiles_once():
  assert_compiles_once(TASK)


def test_loss_and_bit_errors_match_numpy():
  assert_bce_scoring(TASK, TASK.make_batch(jax.random.PRNGKey(1), 16))
